"""One bad clock cannot make the rest of the stream late; many late events are said out loud."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import CONFIGS, cli, make_lines, run_config
from tests.integration.checks import assert_results_match
from tests.reference import compute


def test_one_timestamp_a_day_ahead_costs_that_record_alone(seed_config, tmp_path: Path) -> None:
    lines = make_lines(10_000)
    bad = json.loads(lines[3001])
    assert isinstance(bad.get("timestamp"), float)
    bad["timestamp"] += 86_400
    lines[3001] = json.dumps(bad)
    cfg = seed_config(lines)
    run = run_config(cfg, tmp_path / "out", workers=2)
    assert run.returncode == 0, run.stderr
    ref = compute(lines[:3001] + lines[3002:], lateness=30.0)
    ref.dead_input += 1  # the bad clock's record: a dead letter, counted in the ledger
    assert_results_match(run, ref)
    refused = [d for d in run.jsonl("dead-letters.jsonl")
               if d["reason"].startswith("timestamp too far ahead")]
    assert [json.loads(d["record"]) for d in refused] == [bad]
    assert run.summary()["time_jumps"] == {"held": 0, "released": 0, "refused": 1}
    assert "records refused as timestamp too far ahead" in run.stderr


LATE = f"""
[cluster]
pipeline = spec_examples:AggregationPipeline
python_path = {CONFIGS}
workers = 2
checkpoint_dir = none
http = 127.0.0.1:0

[pipeline:AggregationPipeline]
shard_key = user_id
time_field = timestamp
late_warning_share = 0.05
source = bspump.generator:GeneratorSource
sink = bspump.common:NullSink

[pipeline:AggregationPipeline:GeneratorSource]
count = 15000
rate = 5000
out_of_order = 60
"""


def test_a_high_share_of_late_events_is_warned_about(tmp_path: Path) -> None:
    cfg = tmp_path / "late.ini"
    cfg.write_text(LATE)
    out = tmp_path / "out"
    p = cli("run", str(cfg), "-o", str(out))
    assert p.returncode == 0, p.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["late_events"] > 0.05 * summary["records_read"]
    assert "more than late_warning_share = 0.05) were behind the watermark" in p.stderr
    report = (out / "report.html").read_text()
    assert "late_warning_share = 0.05" in report  # the snapshot's warnings reach the page
