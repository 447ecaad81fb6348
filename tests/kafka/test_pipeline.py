"""The documentation's AggregationPipeline, Kafka in and Kafka out, on a real broker.

Results are compared with the independent reference (tests/reference.py). Input is
produced keyed by user_id, so each user's events stay in order within a partition;
partitions interleave in any order, so allowed_lateness covers the whole input.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.conftest import CONFIGS, ROOT, Run, make_lines, run_config
from tests.kafka.broker import KafkaBroker
from tests.reference import compute

pytestmark = pytest.mark.kafka

PIPE = "AggregationPipeline"
LATENESS = 86400

CONFIG = """
[cluster]
pipeline = spec_examples:AggregationPipeline
python_path = {configs}
workers = {workers}
key_groups = 64
checkpoint_events = 3000

[pipeline:AggregationPipeline]
shard_key = user_id
time_field = timestamp
allowed_lateness = {lateness}

[connection:KafkaConnection]
bootstrap_servers = {bootstrap}
request_timeout_ms = 5000

[pipeline:AggregationPipeline:KafkaSource]
topic = {topic}
group_id = {group}
stop_at_end = yes

[pipeline:AggregationPipeline:KafkaSink]
topic = {topic}-out
windows_topic = {topic}-windows
anomalies_topic = {topic}-anomalies

[pipeline:AggregationPipeline:HourlyCountAnalyzer]
count_field = type
max_keys = 100
anomaly_history = 5
anomaly_threshold = 1.5
"""


def _key(line: str) -> bytes | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if isinstance(event, dict) and event.get("user_id") is not None:
        return str(event["user_id"]).encode()
    return None


async def _produce(bootstrap: str, topic: str, lines: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, line.encode(), key=_key(line)) for line in lines]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _consume_all(bootstrap: str, topic: str) -> list[dict]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            assert time.monotonic() < deadline, f"no partitions of {topic}"
            await asyncio.sleep(0.1)
        parts = list(consumer.assignment())
        ends = await consumer.end_offsets(parts)
        out: list[dict] = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(json.loads(m.value) for m in messages)
        return out
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return make_lines(30_000, users=2000, seed=5)


@pytest.fixture(scope="module")
def reference(lines):
    return compute(lines, lateness=LATENESS, resolution=60, session_timeout=1800)


@pytest.fixture
def setup(kafka_broker: KafkaBroker, tmp_path: Path, lines):
    topic = f"events-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=4)

    def config(workers: int = 2, produce: bool = True) -> Path:
        if produce:
            asyncio.run(_produce(kafka_broker.bootstrap, topic, lines))
        cfg = tmp_path / f"kafka{workers}.ini"
        cfg.write_text(CONFIG.format(configs=CONFIGS, workers=workers, lateness=LATENESS,
                                     bootstrap=kafka_broker.bootstrap, topic=topic,
                                     group=f"g-{topic}"))
        return cfg

    return config, topic, tmp_path / "out"


def _check_state(run: Run, ref) -> None:
    assert run.returncode == 0, run.stderr
    rows = run.jsonl(f"{PIPE}.HourlyCountAnalyzer.windows.jsonl")
    got = [(r["window_start"], r["window_end"], r["key"], r["count"]) for r in rows]
    assert len(got) == len(set(got))
    assert set(got) == ref.windows
    sessions = run.jsonl(f"{PIPE}.UserSessionAnalyzer.sessions.jsonl")
    assert sorted((s["key"], s["start"], s["end"], s["events"]) for s in sessions) == \
        sorted(ref.sessions)
    summary = run.summary()
    assert summary["dead_letters"] == ref.dead_input
    assert summary["late_events"] == 0
    assert summary["events_processed"] == len(ref.accepted)


def _identity(event: dict) -> tuple:
    return (event.get("user_id"), event.get("timestamp"), event.get("value"))


def test_kafka_in_kafka_out_equals_reference(setup, reference, kafka_broker) -> None:
    config, topic, out = setup
    run = run_config(config(), out)
    _check_state(run, reference)
    produced = asyncio.run(_consume_all(kafka_broker.bootstrap, f"{topic}-out"))
    assert len(produced) == len(reference.accepted)
    assert Counter(map(_identity, produced)) == Counter(_identity(e) for _, e in reference.accepted)
    windows = asyncio.run(_consume_all(kafka_broker.bootstrap, f"{topic}-windows"))
    assert {(r["window_start"], r["window_end"], r["key"], r["count"]) for r in windows} == \
        reference.windows
    # Anomalies on the merged windows reach their topic, each once, as in the file.
    anomalies = asyncio.run(_consume_all(kafka_broker.bootstrap, f"{topic}-anomalies"))
    in_file = run.jsonl(f"{PIPE}.HourlyCountAnalyzer.anomalies.jsonl")
    assert in_file, "the input has no anomaly at 1.5 sigma over 5 periods: pick another rule"
    assert sorted(map(json.dumps, anomalies)) == sorted(map(json.dumps, in_file))


def test_cluster_killed_mid_stream_resumes_from_checkpoint_offsets(setup, reference,
                                                                   kafka_broker) -> None:
    config, topic, out = setup
    cfg = config()
    proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(cfg), "-o", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list((out / "checkpoints").glob("cp-*/MANIFEST.json")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint was completed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    run = run_config(cfg, out)
    assert run.summary()["restored_from_checkpoint"] is not None
    _check_state(run, reference)
    # At least once: every event reached the output topic, some maybe twice.
    produced = asyncio.run(_consume_all(kafka_broker.bootstrap, f"{topic}-out"))
    assert {_identity(e) for e in produced} == {_identity(e) for _, e in reference.accepted}


@pytest.mark.skipif(shutil.which("kcat") is None and not os.environ.get("CI"),
                    reason="kcat is not installed (apt-get install kcat)")
def test_kcat_writes_the_input_and_reads_the_output(setup, reference, lines,
                                                   kafka_broker, tmp_path: Path) -> None:
    config, topic, out = setup
    cfg = config(produce=False)
    keyed = tmp_path / "keyed.txt"
    keyed.write_text("".join(f"{(_key(x) or b'').decode()}\t{x}\n" for x in lines))
    subprocess.run(["kcat", "-P", "-b", kafka_broker.bootstrap, "-t", topic, "-K", "\t",
                    "-l", str(keyed)], check=True, timeout=60)
    run = run_config(cfg, out)
    # kcat sends an empty key where we had none: those records lack user_id and are dead.
    _check_state(run, reference)
    p = subprocess.run(["kcat", "-C", "-b", kafka_broker.bootstrap, "-t", f"{topic}-out",
                        "-o", "beginning", "-e", "-q", "-f", "%s\n"], capture_output=True,
                       text=True, check=True, timeout=60)
    produced = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
    assert Counter(map(_identity, produced)) == Counter(_identity(e) for _, e in reference.accepted)


@pytest.mark.parametrize("when", ["at start", "mid-run"])
def test_broker_unreachable_then_back(when, setup, reference, kafka_broker) -> None:
    """A frozen broker (SIGSTOP) is retried with a clear message; nothing is lost."""
    config, topic, out = setup
    cfg = config()
    pid = kafka_broker.pid
    assert pid is not None
    if when == "at start":
        os.kill(pid, signal.SIGSTOP)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(cfg), "-o",
                                 str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        if when == "mid-run":
            deadline = time.monotonic() + 60
            while not list((out / "checkpoints").glob("cp-*/MANIFEST.json")):
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline
                time.sleep(0.02)
            os.kill(pid, signal.SIGSTOP)
        time.sleep(8)
        assert proc.poll() is None, "the run gave up while the broker was away"
    finally:
        os.kill(pid, signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    run = Run(proc.returncode, "", stderr, out)
    assert "retrying in" in stderr and kafka_broker.bootstrap in stderr, stderr
    _check_state(run, reference)
    produced = asyncio.run(_consume_all(kafka_broker.bootstrap, f"{topic}-out"))
    assert {_identity(e) for e in produced} == {_identity(e) for _, e in reference.accepted}
