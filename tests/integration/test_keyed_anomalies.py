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

from bspump.testing import run_pipeline
from tests.conftest import CONFIGS, ROOT, T0, run_config
from tests.integration.anomaly_pipelines import KeyedPipeline

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


def test_the_same_flags_on_any_number_of_workers(pipeline_workers, data) -> None:
    lines, want = data
    result = run_pipeline(KeyedPipeline, [json.loads(x) for x in lines],
                          workers=pipeline_workers, shard_key="user_id",
                          time_field="timestamp", processors={"KeyedAnomalyDetector": {
                              "window": WINDOW, "threshold": THRESHOLD}})
    assert len(want) > 50
    flagged = [(e["user_id"], e["timestamp"]) for e in result.sink if e.get("anomaly")]
    assert len(flagged) == len(set(flagged)) == len(want)
    assert set(flagged) == want
    rows = result.anomalies["KeyedAnomalyDetector"]
    assert {(r["key"], r["event_time"]) for r in rows} == want
    if result.summary is not None:
        assert result.summary["anomalies"] == {"KeyedAnomalyDetector": len(want)}


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


def test_the_documentations_division_by_zero_costs_that_event_alone(pipeline_workers) -> None:
    # 99 zeros, then a value whose distance to the mean squares to 0.0 (underflow): the
    # documentation's std is then 0 while |value - mean| > 0, and it divides by zero.
    values = [0.0] * 99 + [1e-170] + [float(i % 7) for i in range(1, 51)]
    events = [{"user_id": "u1", "timestamp": T0 + i, "value": v} for i, v in enumerate(values)]
    result = run_pipeline("spec_examples:AggregationPipeline", events, python_path=[CONFIGS],
                          workers=pipeline_workers, shard_key="user_id",
                          time_field="timestamp")
    dead = result.dead_letters
    assert len(dead) == 1
    assert dead[0]["processor"] == "RateAnomalyDetector"
    assert "ZeroDivisionError" in dead[0]["reason"]
    assert dead[0]["record"]["value"] == 1e-170
    assert len(result.sink) == len(values) - 1
    if result.summary is not None:
        assert result.summary["ledger"]["processed"] == len(values) - 1
        assert result.summary["ledger"]["dead"] == 1
