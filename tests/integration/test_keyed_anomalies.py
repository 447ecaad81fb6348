"""Per-event anomalies that do not depend on the number of workers, and the documentation's
RateAnomalyDetector whose division by zero costs one event."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT, T0, cli, run_config

HERE = Path(__file__).resolve().parent
WINDOW, THRESHOLD = 20, 3.0

CONFIG = f"""
[cluster]
pipeline = anomaly_pipelines:KeyedPipeline
python_path = {HERE}
key_groups = 64
checkpoint_events = 1500

[pipeline:KeyedPipeline]
shard_key = user_id
time_field = timestamp

[pipeline:KeyedPipeline:FileJSONLinesSource]
path = {{input}}
batch = 300

[pipeline:KeyedPipeline:KeyedAnomalyDetector]
window = {WINDOW}
threshold = {THRESHOLD}
"""


def make_lines(n: int = 12_000, users: int = 40, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        user = f"u{rng.randrange(users)}"
        value = rng.gauss(100, 5)
        if rng.random() < 0.01:
            value *= rng.choice([3, 0.2])  # a spike or a drop
        lines.append(json.dumps({"user_id": user, "timestamp": T0 + i * 0.5,
                                 "value": round(value, 3)}))
    return lines


def reference(lines: list[str]) -> set[tuple[str, float]]:
    """(user, timestamp) of every flagged event: the rule per key, in input order."""
    windows: dict[str, deque[float]] = {}
    flagged = set()
    for line in lines:
        e = json.loads(line)
        w = windows.setdefault(e["user_id"], deque(maxlen=WINDOW))
        w.append(float(e["value"]))
        if len(w) < WINDOW:
            continue
        mean = sum(w) / len(w)
        std = math.sqrt(sum((x - mean) ** 2 for x in w) / len(w))
        if std > 0 and abs(e["value"] - mean) > THRESHOLD * std:
            flagged.add((e["user_id"], e["timestamp"]))
    return flagged


@pytest.fixture(scope="module")
def data() -> tuple[list[str], set[tuple[str, float]]]:
    lines = make_lines()
    return lines, reference(lines)


def _flagged(out: Path) -> set[tuple[str, float]]:
    events = [json.loads(x) for p in out.glob("events.w*.jsonl")
              for x in p.read_text().splitlines()]
    flagged = [(e["user_id"], e["timestamp"]) for e in events if e.get("anomaly")]
    assert len(flagged) == len(set(flagged))
    rows = [json.loads(x) for x in
            (out / "KeyedPipeline.KeyedAnomalyDetector.anomalies.jsonl").read_text().splitlines()]
    assert {(r["key"], r["event_time"]) for r in rows} == set(flagged)
    return set(flagged)


@pytest.mark.parametrize("workers", [None, 1, 2, 3], ids=["in-process", "1", "2", "3"])
def test_the_same_flags_on_any_number_of_workers(workers, data, tmp_path: Path) -> None:
    lines, want = data
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "keyed.ini"
    cfg.write_text(CONFIG.format(input=tmp_path / "in.jsonl"))
    run = run_config(cfg, tmp_path / "out", workers=workers, in_process=workers is None)
    assert run.returncode == 0, run.stderr
    assert len(want) > 50
    assert _flagged(run.out) == want
    assert run.summary()["anomalies"] == {"KeyedAnomalyDetector": len(want)}


def test_the_windows_follow_their_keys_through_a_kill_and_a_restart_on_3(
        tmp_path: Path) -> None:
    lines = make_lines(80_000, users=300)
    want = reference(lines)
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "keyed.ini"
    cfg.write_text(CONFIG.format(input=tmp_path / "in.jsonl"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(cfg), "-o", str(out),
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list((out / "checkpoints").glob("cp-*/MANIFEST.json")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # the whole cluster dies with its supervisor
    proc.communicate(timeout=30)
    run = run_config(cfg, out, workers=3)
    assert run.returncode == 0, run.stderr
    assert run.summary()["restored_from_checkpoint"] is not None
    assert _flagged(out) == want


RATE = f"""
[cluster]
pipeline = spec_examples:AggregationPipeline
python_path = {CONFIGS}

[pipeline:AggregationPipeline]
shard_key = user_id
time_field = timestamp
source = bspump.file:FileJSONLinesSource
sink = bspump.common:NullSink

[pipeline:AggregationPipeline:FileJSONLinesSource]
path = {{input}}
"""


def test_the_documentations_division_by_zero_costs_that_event_alone(tmp_path: Path) -> None:
    # 99 zeros, then a value whose distance to the mean squares to 0.0 (underflow): the
    # documentation's std is then 0 while |value - mean| > 0, and it divides by zero.
    values = [0.0] * 99 + [1e-170] + [float(i % 7) for i in range(1, 51)]
    lines = [json.dumps({"user_id": "u1", "timestamp": T0 + i, "value": v})
             for i, v in enumerate(values)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "rate.ini"
    cfg.write_text(RATE.format(input=tmp_path / "in.jsonl"))
    p = cli("run", str(cfg), "-o", str(tmp_path / "out"), "--in-process")
    assert p.returncode == 0, p.stderr
    dead = [json.loads(x) for x in (tmp_path / "out" / "dead-letters.jsonl").read_text()
            .splitlines()]
    assert len(dead) == 1
    assert dead[0]["processor"] == "RateAnomalyDetector"
    assert "ZeroDivisionError" in dead[0]["reason"]
    assert dead[0]["record"]["value"] == 1e-170
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ledger"]["processed"] == len(values) - 1
    assert summary["ledger"]["dead"] == 1
