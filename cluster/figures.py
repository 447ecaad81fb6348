"""The figures a run publishes, as typed records: the snapshot and ``summary.json``.

:class:`Snapshot` is what the coordinator serves at ``/api/snapshot`` and builds into
``report.html``; ``bspump-cluster status``, ``/metrics`` and the page read it.
:class:`Summary` is ``summary.json``, written when the run ends. Both carry
``version`` (:data:`VERSION`); apart from it their JSON is what it was before they
were typed. A reader decodes them with :func:`decode_snapshot` / :func:`read_summary`:
a document of the wrong shape or version is a ContractError naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from cluster.contract import convert
from cluster.errors import ContractError

VERSION = 1

Number = int | float


class _Figures(msgspec.Struct, kw_only=True):
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``json.dumps`` it: a non-finite number stays one, as before)."""
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result


class CheckpointTaken(_Figures, kw_only=True):
    """One checkpoint this coordinator completed (the page lists the newest 50)."""

    id: int
    at: float  # epoch seconds
    duration_s: float
    bytes: int
    stall_s: float  # routing stood still from the barrier to here
    worker_write_s: float  # the slowest worker's write
    state_bytes: int


class WorkerFigures(_Figures, kw_only=True):
    """One worker in the snapshot."""

    worker: int
    events_in: int
    events_out: int
    pid: int | None
    silent_s: float
    state: str  # running, stalled or done
    events_per_s: float
    queue_depth: int
    open_sessions: int
    key_groups: list[int]  # first and last owned


class CheckpointStatus(_Figures, kw_only=True):
    """The newest checkpoint (None figures: none taken yet)."""

    taken: int
    last_id: int | None
    age_s: float | None
    duration_s: float | None
    stall_s: float | None
    worker_write_s: float | None
    bytes: int | None
    state_bytes: int | None
    enabled: bool


class HistorySample(_Figures, kw_only=True):
    """One second of the page's throughput charts."""

    t: float  # epoch seconds
    records_read: int
    workers: list[int]  # events each worker took in
    open_sessions: list[int]


class Snapshot(_Figures, kw_only=True):
    """Every figure of the running cluster, for /metrics, status, the page, the report."""

    version: int = VERSION
    pipeline: str
    run_id: str
    state: str  # starting, running, finished, stopped or failed
    time: float
    uptime_s: float
    event_time: bool
    records_read: int
    events_per_s: float
    workers: list[WorkerFigures]
    watermark: float | None
    watermark_lag_s: float | None
    dead_letters: int
    late_events: int
    ledger: dict[str, Any]  # coordinator.ledger.Ledger.as_dict
    time_jumps: dict[str, int]
    warnings: list[dict[str, Any]]  # {time, message}
    anomalies: dict[str, int]
    recent_anomalies: list[dict[str, Any]]
    window_rows: int
    sessions_ended: int
    restarts: int
    kafka_lag: dict[str, int]
    checkpoint: CheckpointStatus
    checkpoints: list[CheckpointTaken]
    history: list[HistorySample]
    windows: dict[str, list[dict[str, Any]]]  # merged periods per analyzer
    matrices: list[dict[str, Any]]  # Coordinator.matrix_view


class Summary(_Figures, kw_only=True):
    """``summary.json``: the figures of a finished (or stopped, or failed) run."""

    version: int = VERSION
    pipeline: str
    workers: int
    exit_code: int
    elapsed_s: float
    records_read: int
    events_routed: int
    events_per_s: float | None
    dead_letters: int
    late_events: int
    per_worker_events: list[int]
    events_processed: int
    events_batch_path: int
    restored_from_checkpoint: int | None
    checkpoints_taken: int
    last_checkpoint: CheckpointTaken | None
    window_rows: int
    sessions_ended: int
    watermark: float | None
    source_position: Any
    ledger: dict[str, Any]
    time_jumps: dict[str, int]
    anomalies: dict[str, int]
    result_files: dict[str, int]


def _versioned(obj: Any, what: str) -> None:
    if isinstance(obj, dict) and obj.get("version", VERSION) != VERSION:
        raise ContractError(f'{what}: field "version" is {obj["version"]!r}: this '
                            f"bspump-cluster reads version {VERSION}")


def decode_snapshot(obj: Any, what: str = "snapshot") -> Snapshot:
    """A snapshot from its decoded JSON; ContractError naming the field when it is wrong."""
    _versioned(obj, what)
    return convert(obj, Snapshot, what)


def read_summary(path: Path) -> Summary:
    """``summary.json`` as written at the end of a run; ContractError if it is not one."""
    try:
        obj = json.loads(path.read_bytes())
    except ValueError as e:
        raise ContractError(f"{path}: not JSON: {e}") from None
    _versioned(obj, str(path))
    return convert(obj, Summary, str(path))
