"""Two hosts in one consumer group (``[cluster] tasks = partition``) on a real broker.

Two ``bspump-cluster run`` processes stand for two hosts sharing one checkpoint and
result location. Host A starts alone and takes all four partitions; host B joins
and takes two of them from A's final checkpoints (a live rebalance); then A is
killed with SIGKILL and B takes A's partitions over from their last checkpoints (a
crash). Every partition's results must equal the independent reference run over
that partition's events alone (each partition has its own event time).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zlib
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import parser

from tests.conftest import CONFIGS, ROOT, cli, descendants, make_lines
from tests.kafka.broker import KafkaBroker
from tests.reference import compute

pytestmark = pytest.mark.kafka

PARTITIONS = 4
LATENESS = 30.0
HERE = Path(__file__).resolve().parent
PIPE = "ScaleOutPipeline"

CONFIG = """
[cluster]
pipeline = scaleout_pipelines:ScaleOutPipeline
python_path = {configs}:{here}
workers = 1
key_groups = 16
tasks = partition
output_dir = {out}
checkpoint_interval = 0.3
http = 127.0.0.1:0

[pipeline:ScaleOutPipeline]
shard_key = user_id
time_field = timestamp
allowed_lateness = {lateness}

[connection:KafkaConnection]
bootstrap_servers = {bootstrap}
request_timeout_ms = 5000

[pipeline:ScaleOutPipeline:KafkaSource]
topic = {topic}
group_id = {group}
stop_at_end = yes
session_timeout_ms = 6000
heartbeat_interval_ms = 1000

[pipeline:ScaleOutPipeline:Brake]
seconds_per_event = {brake}

[pipeline:ScaleOutPipeline:HourlyCountAnalyzer]
count_field = type
max_keys = 100
"""


def _spread_users(lines: list[str], users: int, seed: int) -> list[str]:
    """The generator's users are very skewed; spread them evenly so partitions get equal work."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and event.get("user_id") is not None:
            event["user_id"] = f"u{rng.randrange(users)}"
            line = json.dumps(event)
        out.append(line)
    return out


def _partition_of(i: int, line: str) -> int:
    """By user_id, as a producer keyed by the shard key does; records without one anywhere."""
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if isinstance(event, dict) and event.get("user_id") is not None:
        return zlib.crc32(str(event["user_id"]).encode()) % PARTITIONS
    return i % PARTITIONS


async def _produce(bootstrap: str, topic: str, by_partition: list[list[str]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, line.encode(), partition=p)
                   for p, lines in enumerate(by_partition) for line in lines]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _manifests(folder: Path) -> list[dict]:
    """Complete checkpoints of one partition, oldest first."""
    found = []
    for path in sorted(folder.glob("cp-*/MANIFEST.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # pruned or being written right now
    return found


def _wait(what: str, until, procs: list[subprocess.Popen], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        for p in procs:
            assert p.poll() is None, f"host {p.pid} ended early waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


class Group:
    """A topic with the test's events, a shared location and the hosts run on it."""

    def __init__(self, broker: KafkaBroker, tmp_path: Path, seed: int,
                 brake: float = 0.002) -> None:
        lines = _spread_users(make_lines(16_000, seed=seed), users=400, seed=seed)
        self.by_partition: list[list[str]] = [[] for _ in range(PARTITIONS)]
        for i, line in enumerate(lines):
            self.by_partition[_partition_of(i, line)].append(line)
        self.references = [compute(part, lateness=LATENESS, resolution=60,
                                   session_timeout=1800) for part in self.by_partition]
        self.topic = topic = f"scale-{uuid.uuid4().hex[:8]}"
        broker.create_topic(topic, partitions=PARTITIONS)
        asyncio.run(_produce(broker.bootstrap, topic, self.by_partition))
        out = tmp_path / "shared"
        self.tmp = tmp_path
        self.cfg = tmp_path / "scaleout.ini"
        self.cfg.write_text(CONFIG.format(configs=CONFIGS, here=HERE, out=out,
                                          lateness=LATENESS, brake=brake,
                                          bootstrap=broker.bootstrap, topic=topic,
                                          group=f"g-{topic}"))
        self.folders = {p: out / f"{topic}-{p}" for p in range(PARTITIONS)}
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: list = []

    def start(self, name: str) -> tuple[subprocess.Popen, str]:
        """Start a host; return it and its member name (host:pid, as manifests say)."""
        log = (self.tmp / f"{name}.log").open("w")
        self._logs.append(log)
        proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(self.cfg)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
        self.procs[name] = proc
        return proc, f"{socket.gethostname()}:{proc.pid}"

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def manifests(self, p: int) -> list[dict]:
        return _manifests(self.folders[p] / "checkpoints")

    def owners(self, p: int) -> list[str]:
        return [m["owner"] for m in self.manifests(p)]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self._logs:
            log.close()

    def check_results(self, last_owner: str) -> None:
        """Every partition's results equal the reference over that partition's events."""
        for p, ref in enumerate(self.references):
            folder = self.folders[p]
            rows = _rows(folder / f"{PIPE}.HourlyCountAnalyzer.windows.jsonl")
            got = [(r["window_start"], r["window_end"], r["key"], r["count"]) for r in rows]
            assert len(got) == len(set(got)), f"partition {p}: a window row written twice"
            assert set(got) == ref.windows, f"partition {p}"
            sessions = _rows(folder / f"{PIPE}.UserSessionAnalyzer.sessions.jsonl")
            assert sorted((s["key"], s["start"], s["end"], s["events"]) for s in sessions) == \
                sorted(ref.sessions), f"partition {p}"
            assert len(_rows(folder / "dead-letters.jsonl")) == ref.dead_input, f"partition {p}"
            assert len(_rows(folder / "late-events.jsonl")) == ref.late, f"partition {p}"
            summary = json.loads((folder / "summary.json").read_text())
            assert summary["events_processed"] == len(ref.accepted), f"partition {p}"
            final = self.manifests(p)[-1]
            assert final["finished"] and final["owner"] == last_owner
        assert sum(r.late for r in self.references) > 0  # lateness judged per partition


def _group(broker: KafkaBroker, tmp_path: Path, brake: float = 0.002):
    g = Group(broker, tmp_path, seed=11, brake=brake)
    try:
        yield g
    finally:
        g.close()


@pytest.fixture
def group(kafka_broker: KafkaBroker, tmp_path: Path):
    yield from _group(kafka_broker, tmp_path)


@pytest.fixture
def slow_group(kafka_broker: KafkaBroker, tmp_path: Path):
    """Events braked so that a partition takes about 30 s: host A starts its four tasks
    (about 9 s here) and B's join takes its two partitions (about 11 s more), and A must
    still be mid-stream on the partitions it kept when it is killed."""
    yield from _group(kafka_broker, tmp_path, brake=0.008)


def test_two_hosts_split_partitions_and_take_over_a_dead_ones_state(slow_group: Group) -> None:
    g = slow_group
    a, a_name = g.start("a")
    _wait("host A to checkpoint every partition",
          lambda: all(a_name in g.owners(p) for p in range(PARTITIONS)), [a])
    b, b_name = g.start("b")
    _wait("host B to checkpoint the partitions it took over",
          lambda: sum(bool(g.owners(p)) and g.owners(p)[-1] == b_name
                      for p in range(PARTITIONS)) >= 2, [a, b])
    # A checkpoints the partitions it kept twice more after the rebalance, then dies
    # mid-stream. Waiting on its checkpoints, not a fixed time, keeps the kill before
    # A's end on a slow or a fast machine alike.
    kept = {p: g.manifests(p)[-1]["id"] for p in range(PARTITIONS)
            if g.owners(p) and g.owners(p)[-1] == a_name}
    _wait("host A to checkpoint the partitions it kept",
          lambda: all(g.manifests(p)[-1]["id"] >= cp + 2 for p, cp in kept.items()), [a, b])
    a_kids = descendants(a.pid)
    os.kill(a.pid, signal.SIGKILL)
    a.wait(10)
    newest = {p: g.manifests(p)[-1] for p in range(PARTITIONS)}
    a_left = [p for p, m in newest.items() if m["owner"] == a_name]
    assert a_left, "host A owned no partition when it was killed"
    assert any(not newest[p]["finished"] for p in a_left), \
        "host A had finished its partitions before it was killed: nothing taken mid-stream"
    assert b.wait(180) == 0
    b_log, a_log = g.log("b"), g.log("a")

    # B resumed A's partitions from checkpoints A wrote: after the rebalance, after the kill.
    taken = [p for p in range(PARTITIONS)
             if f"partition {g.topic}:{p} resumes from checkpoint" in b_log]
    assert len(taken) == PARTITIONS, b_log[-3000:]
    assert b_log.count(f"written by {a_name}") >= 2 + len(a_left), b_log[-3000:]
    assert "stopping the tasks of" in a_log, a_log[-3000:]  # the live rebalance
    g.check_results(last_owner=b_name)

    # The group's status, read from the shared location by any host.
    status = cli("status", str(g.cfg), "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert [r["partition"] for r in rows] == [f"{g.topic}:{p}" for p in range(PARTITIONS)]
    assert all(r["finished"] and r["owner"] == b_name for r in rows)
    assert [r["records_read"] for r in rows] == [len(part) for part in g.by_partition]
    assert [r["offset"] for r in rows] == [len(part) for part in g.by_partition]
    table = cli("status", str(g.cfg)).stdout
    assert f"{g.topic}:3" in table and "finished" in table
    for pid in a_kids:  # nothing of the killed host is left running
        assert not Path(f"/proc/{pid}").exists() or \
            "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_host_that_leaves_hands_its_partitions_over_at_once(group: Group) -> None:
    """SIGTERM: final checkpoints, offsets committed, the group left; no session timeout."""
    g = group
    a, a_name = g.start("a")
    b, b_name = g.start("b")
    pattern = re.compile(r"member metrics on (http://\S+/metrics)")
    _wait("both hosts to serve their metrics",
          lambda: all(pattern.search(g.log(name)) for name in ("a", "b")), [a, b])
    urls = {name: pattern.search(g.log(name)).group(1)  # type: ignore[union-attr]
            for name in ("a", "b")}

    def owned() -> dict[str, set[int]]:
        """The partitions each host's /metrics names."""
        found = {}
        for name, url in urls.items():
            with urllib.request.urlopen(url, timeout=10) as resp:
                text = resp.read().decode()
            fams = {f.name: f for f in parser.text_string_to_metric_families(text)}
            found[name] = {int(smp.labels["partition"])
                           for smp in fams["bspump_cluster_partition_offset"].samples}
        return found

    split: dict[str, set[int]] = {}

    def split_between_them() -> bool:
        """Each host names some partitions: together all of them, none twice."""
        split.update(owned())
        a_set, b_set = split["a"], split["b"]
        return bool(a_set and b_set) and a_set | b_set == set(range(PARTITIONS)) \
            and not a_set & b_set

    _wait("the hosts' metrics to split the partitions between them", split_between_them,
          [a, b])
    a_parts, b_parts = sorted(split["a"]), sorted(split["b"])
    _wait("each host to checkpoint the partitions it owns",
          lambda: all(g.owners(p) and g.owners(p)[-1] == a_name for p in a_parts) and
          all(g.owners(p) and g.owners(p)[-1] == b_name for p in b_parts), [a, b])
    os.kill(b.pid, signal.SIGTERM)
    assert b.wait(30) == 128 + signal.SIGTERM
    b_final = {p: g.manifests(p)[-1] for p in b_parts}
    assert all(m["owner"] == b_name for m in b_final.values())
    assert a.wait(180) == 0
    a_log, b_log = g.log("a"), g.log("b")
    assert "final checkpoint" in b_log, b_log[-3000:]
    for p, m in b_final.items():  # A went on from exactly B's last word on each partition
        assert (f"partition {g.topic}:{p} resumes from checkpoint {m['id']} written by "
                f"{b_name}") in a_log, a_log[-3000:]
    g.check_results(last_owner=a_name)
