"""The benchmark pipeline as a Bytewax 0.21 dataflow.

    BENCH_INPUT=EVENTS.jsonl BENCH_OUT=DIR python -m bytewax.run bytewax_peer:flow
    (2 processes: the same with ``-i 0 -a "HOST:P0;HOST:P1"`` and ``-i 1 -a ...``)

``FileSource`` (one file, so one partition: one worker reads and parses it) -> ``json.loads``
-> keyed by type, ``count_window`` over 60 s ``TumblingWindower`` windows aligned to the
epoch; keyed by user_id, ``fold_window`` over a ``SessionWindower`` with an 1800 s gap
keeping (count, first, last). Both use an ``EventClock`` on the event's timestamp with a
60 s ``wait_for_system_duration``: the input is in timestamp order, so no event is late
unless a worker stalls for a minute.

Each worker writes its own files in ``BENCH_OUT``: ``windows.w<i>.jsonl``
(``{window_start, window_end, key, count}``), ``sessions.w<i>.jsonl`` (``{key, start, end,
events}``), ``late.w<i>.jsonl`` (events a window operator called late) and
``timing.w<i>.<step>.json`` (when its sink was built and closed, and how many lines the
worker parsed), from which the benchmark takes the elapsed time.

Settings (environment): ``BENCH_INPUT``, ``BENCH_OUT``, ``BENCH_RESOLUTION`` (60),
``BENCH_SESSION_GAP`` (1800), ``BENCH_WAIT`` (60, seconds of wait_for_system_duration).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import (
    EventClock,
    SessionWindower,
    TumblingWindower,
    WindowMetadata,
    count_window,
    fold_window,
)
from bytewax.outputs import DynamicSink, StatelessSinkPartition

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PARSED = [0]  # lines parsed by this process


class _JsonLinesPartition(StatelessSinkPartition[dict[str, Any]]):
    """Appends rows to one worker's file; notes when it was built and closed."""

    def __init__(self, out: Path, name: str, worker: int) -> None:
        self._file = open(out / f"{name}.w{worker}.jsonl", "w")  # noqa: SIM115
        self._timing = out / f"timing.w{worker}.{name}.json"
        self._built = time.time()

    def write_batch(self, items: list[dict[str, Any]]) -> None:
        """Write a batch of rows."""
        self._file.writelines(json.dumps(item) + "\n" for item in items)

    def close(self) -> None:
        """End of the dataflow: close the file and write the timing."""
        self._file.close()
        self._timing.write_text(json.dumps({"start": self._built, "end": time.time(),
                                            "parsed": PARSED[0]}))


class JsonLinesSink(DynamicSink[dict[str, Any]]):
    """Every worker writes its rows to ``<out>/<name>.w<worker>.jsonl``."""

    def __init__(self, out: Path, name: str) -> None:
        self._out = out
        self._name = name

    def build(self, step_id: str, worker_index: int,
              worker_count: int) -> _JsonLinesPartition:
        """One file per worker."""
        return _JsonLinesPartition(self._out, self._name, worker_index)


def parse(line: str) -> dict[str, Any]:
    """One JSON line to an event."""
    PARSED[0] += 1
    return json.loads(line)


def event_time(event: dict[str, Any]) -> datetime:
    """The event's timestamp (epoch seconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(event["timestamp"], tz=UTC)


def session_new() -> list[float]:
    """An empty session: [events, first, last]."""
    return [0, float("inf"), float("-inf")]


def session_add(acc: list[float], event: dict[str, Any]) -> list[float]:
    """Count an event into its session."""
    t = event["timestamp"]
    acc[0] += 1
    if t < acc[1]:
        acc[1] = t
    if t > acc[2]:
        acc[2] = t
    return acc


def session_merge(a: list[float], b: list[float]) -> list[float]:
    """Two sessions that the windower joined."""
    return [a[0] + b[0], min(a[1], b[1]), max(a[2], b[2])]


def build_flow() -> Dataflow:
    """The dataflow, configured from the environment."""
    path = Path(os.environ.get("BENCH_INPUT", "bench/data/w1.jsonl"))
    out = Path(os.environ.get("BENCH_OUT", "bench/out/bytewax"))
    out.mkdir(parents=True, exist_ok=True)
    res = float(os.environ.get("BENCH_RESOLUTION", "60"))
    gap = float(os.environ.get("BENCH_SESSION_GAP", "1800"))
    wait = timedelta(seconds=float(os.environ.get("BENCH_WAIT", "60")))

    flow = Dataflow("bench")
    lines = op.input("read", flow, FileSource(path, batch_size=5000))
    events = op.map("parse", lines, parse)
    clock = EventClock(event_time, wait_for_system_duration=wait)

    per_type = count_window("per_type", events, clock,
                            TumblingWindower(length=timedelta(seconds=res), align_to=EPOCH),
                            key=lambda e: e["type"])

    def window_row(item: tuple[str, tuple[int, int]]) -> dict[str, Any]:
        key, (window_id, count) = item
        start = window_id * res  # TumblingWindower: window i opens at align_to + i * length
        return {"window_start": start, "window_end": start + res, "key": key, "count": count}

    op.output("windows_out", op.map("window_rows", per_type.down, window_row),
              JsonLinesSink(out, "windows"))

    by_user = op.key_on("by_user", events, lambda e: e["user_id"])
    sessions = fold_window("sessions", by_user, clock,
                           SessionWindower(gap=timedelta(seconds=gap)),
                           session_new, session_add, session_merge)

    def session_row(item: tuple[str, tuple[int, list[float]]]) -> dict[str, Any]:
        key, (_window_id, (count, first, last)) = item
        return {"key": key, "start": first, "end": last, "events": int(count)}

    op.output("sessions_out", op.map("session_rows", sessions.down, session_row),
              JsonLinesSink(out, "sessions"))

    def late_row(item: tuple[str, tuple[int, Any]]) -> dict[str, Any]:
        key, (window_id, event) = item
        if isinstance(event, WindowMetadata):  # not expected on the late stream
            event = {"meta": str(event)}
        return {"key": key, "window_id": window_id, "event": event}

    late = op.merge("late", per_type.late, sessions.late)
    op.output("late_out", op.map("late_rows", late, late_row), JsonLinesSink(out, "late"))
    return flow


flow = build_flow()
