"""Anomalies on merged windows: one answer on any number of workers, batch size, restore.

The input has per-type counts per minute around a base rate, with spikes and drops
planted at known minutes. The expected anomalies come from a plain single-process
computation of the rule as the README states it, over counts made from the input."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT, T0, descendants, run_config

HISTORY, THRESHOLD, RES = 10, 3.0, 60.0

CONFIG = f"""
[cluster]
pipeline = spec_examples:AggregationPipeline
python_path = {CONFIGS}
key_groups = 64
batch_size = {{batch_size}}
checkpoint_events = 2000
{{extra}}

[pipeline:AggregationPipeline]
shard_key = user_id
time_field = timestamp
source = bspump.file:FileJSONLinesSource
sink = bspump.common:NullSink

[pipeline:AggregationPipeline:FileJSONLinesSource]
path = {{input}}
batch = {{source_batch}}

[pipeline:AggregationPipeline:HourlyCountAnalyzer]
count_field = type
anomaly_history = {HISTORY}
anomaly_threshold = {THRESHOLD}
"""


def make_events(minutes: int = 180, seed: int = 3) -> tuple[list[str], set[tuple[int, str]]]:
    """JSON lines in time order, and the (minute, type) cells where something was planted."""
    rng = random.Random(seed)
    base = {f"t{k}": 8 + 4 * k for k in range(8)}
    planted: set[tuple[int, str]] = set()
    events: list[tuple[float, str, str]] = []
    for minute in range(minutes):
        for kind, rate in base.items():
            n = max(1, round(rng.gauss(rate, math.sqrt(rate))))
            if minute > 20 and rng.random() < 0.02:
                n, _ = rate * 6, planted.add((minute, kind))  # a spike
            elif minute > 20 and rng.random() < 0.02:
                n, _ = 1, planted.add((minute, kind))  # a drop
            for _ in range(n):
                t = T0 + minute * RES + rng.uniform(0, RES - 0.001)
                events.append((t, kind, f"u{rng.randrange(500)}"))
    events.sort()
    return ([json.dumps({"user_id": u, "type": k, "timestamp": round(t, 3)})
             for t, k, u in events], planted)


def reference(lines: list[str]) -> dict[tuple[float, str], tuple[float, float, float, float]]:
    """(window_start, key) -> (count, mean, std, score) of every anomaly, by the rule."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for line in lines:
        e = json.loads(line)
        p = math.floor(e["timestamp"] / RES)
        counts[p][e["type"]] = counts[p].get(e["type"], 0) + 1
    first: dict[str, int] = {}
    found = {}
    for p in sorted(counts):
        for key, count in sorted(counts[p].items()):
            first.setdefault(key, p)
            if p - first[key] < HISTORY:
                continue
            past = [counts.get(q, {}).get(key, 0) for q in range(p - HISTORY, p)]
            mean = sum(past) / HISTORY
            std = (sum((v - mean) ** 2 for v in past) / HISTORY) ** 0.5
            if std > 0 and abs(count - mean) > THRESHOLD * std:
                found[(p * RES, key)] = (count, mean, std, abs(count - mean) / std)
    return found


@pytest.fixture(scope="module")
def data() -> tuple[list[str], set[tuple[int, str]], dict]:
    lines, planted = make_events()
    return lines, planted, reference(lines)


def _config(tmp_path: Path, lines: list[str], batch_size: int = 1000, source_batch: int = 1000,
            extra: str = "") -> Path:
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "anomalies.ini"
    cfg.write_text(CONFIG.format(input=path, batch_size=batch_size, source_batch=source_batch,
                                 extra=extra))
    return cfg


def _found(out: Path) -> dict[tuple[float, str], tuple[float, float, float, float]]:
    path = out / "AggregationPipeline.HourlyCountAnalyzer.anomalies.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(set(r) == {"window_start", "window_end", "key", "count", "mean", "std", "score"}
               and r["window_end"] == r["window_start"] + RES for r in rows)
    found = {(r["window_start"], r["key"]): (r["count"], r["mean"], r["std"], r["score"])
             for r in rows}
    assert len(found) == len(rows), "an anomaly was written twice"
    return found


def _same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for cell, values in want.items():
        assert got[cell] == pytest.approx(values, rel=1e-9), cell


def test_the_reference_finds_what_was_planted(data) -> None:
    _, planted, want = data
    found_cells = {(round(start / RES - T0 / RES), key) for start, key in want}
    # Nearly every planted spike or drop is an anomaly (with 10 periods of history a 3
    # sigma rule also flags some natural noise and the period after a spike's echo).
    assert len(found_cells & planted) >= 0.8 * len(planted) > 10
    assert len(found_cells) <= 3 * len(planted)


@pytest.mark.parametrize(("workers", "batch_size", "source_batch"),
                         [(None, 1000, 1000), (1, 1000, 1000), (2, 7, 333), (3, 5000, 5000)],
                         ids=["in-process", "1 worker", "2 workers, small batches",
                              "3 workers, large batches"])
def test_the_same_anomalies_on_any_topology_and_batch_size(
        workers, batch_size, source_batch, data, tmp_path: Path) -> None:
    lines, _, want = data
    cfg = _config(tmp_path, lines, batch_size, source_batch)
    run = run_config(cfg, tmp_path / "out", workers=workers, in_process=workers is None)
    assert run.returncode == 0, run.stderr
    _same(_found(run.out), want)
    assert run.summary()["anomalies"] == {"HourlyCountAnalyzer": len(want)}


def test_after_a_kill_and_a_restart_on_another_number_of_workers(tmp_path: Path) -> None:
    lines, _ = make_events(minutes=900)
    want = reference(lines)
    cfg = _config(tmp_path, lines, source_batch=200)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(cfg), "-o", str(out),
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)

    def newest() -> int:
        ids = [int(p.parent.name[3:]) for p in (out / "checkpoints").glob("cp-*/MANIFEST.json")]
        return max(ids, default=0)

    def wait_for(cp_id: int) -> None:
        deadline = time.monotonic() + 60
        while newest() < cp_id:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint was completed"
            time.sleep(0.005)

    wait_for(2)
    coordinator = next(p for p, c in descendants(proc.pid).items() if "-m coordinator" in c)
    os.kill(coordinator, signal.SIGKILL)  # the run restarts from its last checkpoint...
    wait_for(newest() + 1)
    os.kill(proc.pid, signal.SIGKILL)  # ...and then dies whole, mid-stream
    _, err = proc.communicate(timeout=60)
    assert "restarting from the last checkpoint" in err, err
    run = run_config(cfg, out, workers=3)  # resumed on 3 workers
    assert run.returncode == 0, run.stderr
    assert run.summary()["restored_from_checkpoint"] is not None
    _same(_found(out), want)
