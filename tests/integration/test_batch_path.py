"""The batch path (numpy columns end to end) gives the per-event path's results.

CountersPipeline counts per type and minute with TimeWindowAnalyzer.count_batch and
per-user events and value sums in a Matrix (evaluate_batch). The generator's columns
go through the batch path; the same events written as JSON lines go through the
per-event path (evaluate). Both are compared with counts computed here.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import bspump
from bspump.generator import GeneratorSource
from cluster.config import Config
from tests.conftest import CONFIGS, run_config

EVENTS = 200_000
USERS = 3000
BASE = f"""
[cluster]
pipeline = example_pipelines:CountersPipeline
python_path = {CONFIGS}
key_groups = 128

[pipeline:CountersPipeline]
shard_key = user_id
time_field = timestamp
{{source}}

[pipeline:CountersPipeline:GeneratorSource]
count = {EVENTS}
users = {USERS}
types = 7
events_per_second = 50
out_of_order = 3
batch = 20000

[pipeline:CountersPipeline:TimeWindowAnalyzer]
count_field = type

[pipeline:CountersPipeline:UserTotalsAnalyzer]
users = {USERS}
"""


@pytest.fixture(scope="module")
def events() -> list[dict]:
    cfg = Config.from_string(BASE.format(source=""), name="gen")
    app = bspump.Application(cfg)
    gen = GeneratorSource(app, bspump.Pipeline(app, "CountersPipeline"))
    return gen.events(0, EVENTS)


@pytest.fixture(scope="module")
def expected(events):
    """Counts computed here, with the lateness rule, from the events as dicts."""
    windows: Counter[tuple[float, str]] = Counter()
    totals = np.zeros((USERS, 2))
    watermark = -math.inf
    late = 0
    for e in events:
        t = e["timestamp"]
        if t < watermark:
            late += 1
            continue
        watermark = max(watermark, t)
        windows[(math.floor(t / 60) * 60, e["type"])] += 1
        row = int(e["user_id"][1:])
        totals[row, 0] += 1
        totals[row, 1] += e["value"]
    return windows, totals, late


def _check(run, expected, batch_path: bool) -> None:
    windows, totals, late = expected
    assert run.returncode == 0, run.stderr
    rows = run.jsonl("CountersPipeline.TimeWindowAnalyzer.windows.jsonl")
    got = Counter({(r["window_start"], r["key"]): r["count"] for r in rows})
    assert len(rows) == len(got)
    assert got == windows
    merged = np.load(run.out / "UserTotals.npy", allow_pickle=False)
    np.testing.assert_array_equal(merged[:, 0], totals[:, 0])
    np.testing.assert_allclose(merged[:, 1], totals[:, 1], rtol=1e-12)
    summary = run.summary()
    assert summary["late_events"] == late > 0
    assert summary["events_batch_path"] == (EVENTS - late if batch_path else 0)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_columns_end_to_end(workers, expected, tmp_path: Path) -> None:
    cfg = tmp_path / "gen.ini"
    cfg.write_text(BASE.format(source=""))
    _check(run_config(cfg, tmp_path / "out", workers=workers), expected, batch_path=True)


def test_per_event_path_agrees(events, expected, tmp_path: Path) -> None:
    data = tmp_path / "events.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in events))
    cfg = tmp_path / "file.ini"
    cfg.write_text(BASE.format(source="source = bspump.file:FileJSONLinesSource")
                   + f"\n[pipeline:CountersPipeline:FileJSONLinesSource]\npath = {data}\n")
    _check(run_config(cfg, tmp_path / "out", workers=2), expected, batch_path=False)
