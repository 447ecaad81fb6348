"""The snapshot and ``summary.json`` a coordinator writes: the JSON keys (and their order)
they had before they were typed records, with ``version`` added, and each reads back
through its contract."""

from __future__ import annotations

import json
from collections.abc import Callable

from cluster import figures
from coordinator.runtime import Coordinator
from tests.conftest import T0

# The keys as the coordinator wrote them before the figures were typed.
SNAPSHOT_KEYS = [
    "pipeline", "run_id", "state", "time", "uptime_s", "event_time", "records_read",
    "events_per_s", "workers", "watermark", "watermark_lag_s", "dead_letters", "late_events",
    "ledger", "time_jumps", "warnings", "anomalies", "recent_anomalies", "window_rows",
    "sessions_ended", "restarts", "kafka_lag", "checkpoint", "checkpoints", "history",
    "windows", "matrices"]
WORKER_KEYS = ["worker", "events_in", "events_out", "pid", "silent_s", "state",
               "events_per_s", "queue_depth", "open_sessions", "key_groups"]
CHECKPOINT_KEYS = ["taken", "last_id", "age_s", "duration_s", "stall_s", "worker_write_s",
                   "bytes", "state_bytes", "enabled"]
HISTORY_KEYS = ["t", "records_read", "workers", "open_sessions"]
SUMMARY_KEYS = [
    "pipeline", "workers", "exit_code", "elapsed_s", "records_read", "events_routed",
    "events_per_s", "dead_letters", "late_events", "per_worker_events", "events_processed",
    "events_batch_path", "restored_from_checkpoint", "checkpoints_taken", "last_checkpoint",
    "window_rows", "sessions_ended", "watermark", "source_position", "ledger", "time_jumps",
    "anomalies", "result_files"]


def _coordinator(make_coordinator: Callable[..., Coordinator]) -> Coordinator:
    coord = make_coordinator([json.dumps({"user_id": "u1", "timestamp": T0})], workers=2)
    coord.counts.records_read = 5
    coord.status.sample()
    return coord


def test_the_snapshot_keeps_its_keys_and_adds_its_version(
        make_coordinator: Callable[..., Coordinator]) -> None:
    coord = _coordinator(make_coordinator)
    snap = json.loads(json.dumps(coord.snapshot().to_dict()))
    assert list(snap) == ["version", *SNAPSHOT_KEYS]
    assert snap["version"] == figures.VERSION == 1
    assert [list(w) for w in snap["workers"]] == [WORKER_KEYS, WORKER_KEYS]
    assert list(snap["checkpoint"]) == CHECKPOINT_KEYS
    assert [list(h) for h in snap["history"]] == [HISTORY_KEYS]
    assert snap["records_read"] == 5 and snap["history"][0]["records_read"] == 5
    assert [w["key_groups"] for w in snap["workers"]] == [[0, 31], [32, 63]]
    # What /api/snapshot serves reads back as the record it was.
    assert figures.decode_snapshot(snap).to_dict() == snap


def test_summary_json_keeps_its_keys_adds_its_version_and_reads_back(
        make_coordinator: Callable[..., Coordinator]) -> None:
    coord = _coordinator(make_coordinator)
    coord.settings.output_dir.mkdir(parents=True, exist_ok=True)
    coord.status.finish(0)
    path = coord.settings.output_dir / "summary.json"
    written = json.loads(path.read_text())
    assert list(written) == ["version", *SUMMARY_KEYS]
    assert written["version"] == 1 and written["records_read"] == 5
    assert written["last_checkpoint"] is None
    assert figures.read_summary(path).to_dict() == written
