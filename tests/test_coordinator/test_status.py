"""``bspump-cluster status``: the lines it prints for a snapshot."""

from __future__ import annotations

from cluster.cli import format_status, human_seconds
from tests.test_coordinator.test_metrics import snapshot


def test_a_header_then_one_aligned_line_per_worker() -> None:
    lines = format_status(snapshot(pipeline="SeedPipeline"), "http://127.0.0.1:8765")
    text = "\n".join(lines)
    assert lines[0].startswith("SeedPipeline  running  up 12 s  run 4242.abcd")
    assert lines[0].endswith("http://127.0.0.1:8765/")
    assert "events 123,456 read, 4,322/s" in text  # 4321.5 rounds half to even
    assert "watermark 2026-01-01T00:00:00Z (lag 100 s)" in text
    assert "dead letters 7   late 3" in text and "restarts 2" in text
    assert "last checkpoint 9, 1.2 s ago, took 0.218 s (4 taken)" in text
    assert "kafka lag 17 (events:0 5, events:1 0, my:topic:2 12)" in text
    head = next(i for i, x in enumerate(lines) if x.lstrip().startswith("worker"))
    rows = lines[head + 1:]
    assert [r.split() for r in rows] == [
        ["0", "0-31", "60,000", "59,000", "2,100", "1,000", "140"],
        ["1", "32-63", "63,456", "63,400", "2,201", "56", "160"]]
    # Right-aligned numbers: every row as long as the header.
    assert {len(r) for r in rows} == {len(lines[head])}


def test_no_watermark_no_checkpoint_no_kafka() -> None:
    snap = snapshot(watermark=None, watermark_lag_s=None, kafka_lag={},
                    checkpoint={"taken": 0, "last_id": None, "age_s": None,
                                "duration_s": None, "enabled": False})
    text = "\n".join(format_status(snap))
    assert "watermark -" in text
    assert "(lag" not in text and "kafka" not in text
    assert "last checkpoint - (checkpoints off)" in text


def test_human_seconds() -> None:
    assert [human_seconds(s) for s in (0.42, 12, 300, 10800, 28_600_000)] == [
        "0.4 s", "12 s", "5.0 min", "3.0 h", "331 d"]
