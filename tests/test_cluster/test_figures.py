"""The snapshot and ``summary.json`` as typed records: decoded with their version checked,
and a document of the wrong shape named by its field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cluster import figures
from cluster.errors import ContractError

# summary.json as a run of main wrote it before the figures were typed (no version).
WRITTEN_BEFORE = """{
  "pipeline": "AggregationPipeline",
  "workers": 2,
  "exit_code": 143,
  "elapsed_s": 3.974,
  "records_read": 0,
  "events_routed": 0,
  "events_per_s": 0.0,
  "dead_letters": 0,
  "late_events": 0,
  "per_worker_events": [
    0,
    0
  ],
  "events_processed": 0,
  "events_batch_path": 0,
  "restored_from_checkpoint": null,
  "checkpoints_taken": 1,
  "last_checkpoint": {
    "id": 1,
    "at": 1796411299.4989305,
    "duration_s": 0.0157,
    "bytes": 584,
    "stall_s": 0.0157,
    "worker_write_s": 0.010768,
    "state_bytes": 584
  },
  "window_rows": 0,
  "sessions_ended": 0,
  "watermark": null,
  "source_position": null,
  "ledger": {
    "read": 0,
    "processed": 0,
    "late": 0,
    "dead": 0,
    "in_flight": 0,
    "unaccounted": 0,
    "held": 0,
    "closes": true
  },
  "time_jumps": {
    "held": 0,
    "released": 0,
    "refused": 0
  },
  "anomalies": {},
  "result_files": {}
}"""

SNAPSHOT: dict[str, Any] = {
    "version": 1, "pipeline": "P", "run_id": "1.ab", "state": "running", "time": 1.7e9,
    "uptime_s": 2.5, "event_time": True, "records_read": 10, "events_per_s": 4.0,
    "workers": [{"worker": 0, "events_in": 10, "events_out": 9, "pid": 42, "silent_s": 0.1,
                 "state": "running", "events_per_s": 4.0, "queue_depth": 1,
                 "open_sessions": 0, "key_groups": [0, 255]}],
    "watermark": None, "watermark_lag_s": None, "dead_letters": 0, "late_events": 0,
    "ledger": {"read": 10, "closes": False}, "time_jumps": {"held": 0},
    "warnings": [{"time": 1.7e9, "message": "m"}], "anomalies": {}, "recent_anomalies": [],
    "window_rows": 0, "sessions_ended": 0, "restarts": 0, "kafka_lag": {"t:0": 3},
    "checkpoint": {"taken": 1, "last_id": 1, "age_s": 0.5, "duration_s": 0.1, "stall_s": 0.1,
                   "worker_write_s": 0.05, "bytes": 10, "state_bytes": 10, "enabled": True},
    "checkpoints": [{"id": 1, "at": 1.7e9, "duration_s": 0.1, "bytes": 10, "stall_s": 0.1,
                     "worker_write_s": 0.05, "state_bytes": 10}],
    "history": [{"t": 1.7e9, "records_read": 10, "workers": [9], "open_sessions": [0]}],
    "windows": {"TW": [{"window_start": 0, "total": 3, "keys": 1, "top": [["a", 3]]}]},
    "matrices": [],
}


def test_a_snapshot_round_trips() -> None:
    snap = figures.decode_snapshot(SNAPSHOT)
    assert snap.workers[0].key_groups == [0, 255] and snap.checkpoints[0].id == 1
    assert snap.to_dict() == SNAPSHOT


def test_a_snapshot_without_version_is_version_1() -> None:
    old = {k: v for k, v in SNAPSHOT.items() if k != "version"}
    assert figures.decode_snapshot(old).version == 1


@pytest.mark.parametrize("path, value, error", [
    (("workers", 0, "events_in"), "10", 'field "workers[0].events_in" must be an integer, '
                                        "got string"),
    (("checkpoint",), [], 'field "checkpoint" must be a map, got list'),
    (("kafka_lag", "t:0"), 1.5, "field \"kafka_lag['t:0']\" must be an integer, got number"),
    (("version",), 2, 'field "version" is 2: this bspump-cluster reads version 1'),
], ids=["events text", "checkpoint list", "lag number", "version"])
def test_a_snapshot_of_the_wrong_shape_names_the_field(path, value, error: str) -> None:
    snap = copy.deepcopy(SNAPSHOT)
    where = snap
    for step in path[:-1]:
        where = where[step]
    where[path[-1]] = value
    with pytest.raises(ContractError) as e:
        figures.decode_snapshot(snap, "http://h:1/api/snapshot")
    assert str(e.value) == f"http://h:1/api/snapshot: {error}"


def test_a_snapshot_missing_a_field() -> None:
    snap = {k: v for k, v in SNAPSHOT.items() if k != "records_read"}
    with pytest.raises(ContractError, match=r'^snapshot: field "records_read" is missing$'):
        figures.decode_snapshot(snap)


def test_a_summary_written_before_reads_as_version_1(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(WRITTEN_BEFORE)
    s = figures.read_summary(path)
    assert s.version == 1 and s.exit_code == 143 and s.per_worker_events == [0, 0]
    assert s.last_checkpoint is not None and s.last_checkpoint.bytes == 584
    # Typed, it writes the same figures, the version added in front.
    assert s.to_dict() == {"version": 1, **json.loads(WRITTEN_BEFORE)}


@pytest.mark.parametrize("change, error", [
    (lambda s: s.update(ledger=[]), 'field "ledger" must be a map, got list'),
    (lambda s: s.update(version=3), 'field "version" is 3: this bspump-cluster reads '
                                    "version 1"),
    (lambda s: s["last_checkpoint"].pop("stall_s"), 'field "last_checkpoint.stall_s" is '
                                                    "missing"),
], ids=["ledger list", "version", "no stall"])
def test_a_summary_of_the_wrong_shape_names_the_field(tmp_path: Path, change,
                                                      error: str) -> None:
    s = json.loads(WRITTEN_BEFORE)
    change(s)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(s))
    with pytest.raises(ContractError) as e:
        figures.read_summary(path)
    assert str(e.value) == f"{path}: {error}"
