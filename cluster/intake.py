"""Intake: from source records to per-worker batches, event times and watermarks.

The coordinator (and the in-process topology) feed every record through one
:class:`Intake`. It decodes only what routing needs (the shard key and the event
time), decides lateness against the watermark *before* the record, and cuts the
stream into chunks: the data of a chunk is sent first, then its watermark, so a
worker never sees a watermark that overtakes data it has not received.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cluster.config import PipelineSettings
from cluster.errors import RecordError
from cluster.layout import Layout, key_extractor

# Event times outside this range are almost surely a unit mistake (ms, ns): refuse them
# instead of pushing the watermark to the year 50,000 and making every later record late.
MIN_TIME = 0.0
MAX_TIME = 32503680000.0  # 3000-01-01

_CACHE_LIMIT = 1 << 20


def parse_event_time(value: Any) -> float:
    """Epoch seconds from a number, a numeric string or an ISO-8601 string."""
    if isinstance(value, bool) or value is None:
        raise RecordError(f"event time is {value!r}")
    if isinstance(value, (int, float)):
        try:
            t = float(value)
        except OverflowError:  # a JSON integer of hundreds of digits
            raise RecordError("event time is a number too large for a float") from None
    elif isinstance(value, str):
        try:
            t = float(value)
        except ValueError:
            try:
                dt = datetime.fromisoformat(value)
            except ValueError:
                raise RecordError(f"event time {value!r} is neither a number nor ISO-8601")\
                    from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            t = dt.timestamp()
    else:
        raise RecordError(f"event time has type {type(value).__name__}")
    if not (MIN_TIME <= t < MAX_TIME) or math.isnan(t):
        raise RecordError(f"event time {value!r} is outside 1970..3000 (epoch seconds expected)")
    return t


@dataclass
class Chunk:
    """Per-worker data, then (optionally) a watermark to send to every worker."""

    times: list[list[float]]
    events: list[list[Any]]
    watermark: float | None = None


@dataclass
class Rejected:
    """A record that does not enter the pipeline: a dead letter or a late event."""

    record: Any
    reason: str
    event_time: float | None = None


@dataclass
class IntakeResult:
    """What one source batch turned into."""

    chunks: list[Chunk] = field(default_factory=list)
    dead: list[Rejected] = field(default_factory=list)
    late: list[Rejected] = field(default_factory=list)
    accepted: int = 0


class Intake:
    """Routes records to workers and keeps the watermark (see module docstring)."""

    def __init__(self, routing: PipelineSettings, layout: Layout, tick: float) -> None:
        if not tick > 0:
            raise ValueError("tick must be positive")
        self.routing = routing
        self.layout = layout
        self.tick = tick
        self.lateness = routing.allowed_lateness
        self.event_time = routing.time_field is not None
        self.watermark = -math.inf
        self.max_time = -math.inf
        self._next_boundary = -math.inf
        self._key = key_extractor(routing.shard_key)
        self._time_field = routing.time_field
        self._cache: dict[Any, int] = {}

    def _new_chunk(self) -> Chunk:
        n = self.layout.workers
        return Chunk([[] for _ in range(n)], [[] for _ in range(n)])

    def _worker(self, key: Any) -> int:
        try:
            return self._cache[key]
        except KeyError:
            pass
        except TypeError:
            return self.layout.worker_of(key)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        w = self._cache[key] = self.layout.worker_of(key)
        return w

    def feed(self, records: list[Any], now: float | None = None) -> IntakeResult:
        """Route one batch of decoded records; ``now`` stamps them in processing time."""
        result = IntakeResult()
        chunk = self._new_chunk()
        key_of = self._key
        worker_of = self._worker
        dead = result.dead
        accepted = 0
        if not self.event_time:
            stamp = now if now is not None else 0.0
            for record in records:
                try:
                    key = key_of(record)
                except RecordError as e:
                    dead.append(Rejected(record, str(e)))
                    continue
                w = worker_of(key)
                chunk.times[w].append(stamp)
                chunk.events[w].append(record)
                accepted += 1
            result.chunks.append(chunk)
            result.accepted = accepted
            return result

        tf = self._time_field
        late = result.late
        lateness = self.lateness
        for record in records:
            try:
                key = key_of(record)
                try:
                    raw_time = record[tf]
                except KeyError:
                    raise RecordError(f"missing time field {tf!r}") from None
                t = parse_event_time(raw_time)
            except RecordError as e:
                dead.append(Rejected(record, str(e)))
                continue
            if t < self.watermark:
                late.append(Rejected(record, "late", t))
                continue
            if t > self.max_time:
                self.max_time = t
                w_new = t - lateness
                if w_new > self.watermark:
                    self.watermark = w_new
                    if w_new >= self._next_boundary:
                        chunk.watermark = w_new
                        result.chunks.append(chunk)
                        chunk = self._new_chunk()
                        self._next_boundary = (math.floor(w_new / self.tick) + 1) * self.tick
            w = worker_of(key)
            chunk.times[w].append(t)
            chunk.events[w].append(record)
            accepted += 1
        result.chunks.append(chunk)
        result.accepted = accepted
        return result

    def state(self) -> dict[str, float]:
        """Watermark bookkeeping, for a checkpoint manifest."""
        return {"watermark": self.watermark, "max_time": self.max_time,
                "next_boundary": self._next_boundary}

    def set_state(self, state: dict[str, float]) -> None:
        """Continue from :meth:`state`."""
        self.watermark = float(state["watermark"])
        self.max_time = float(state["max_time"])
        self._next_boundary = float(state["next_boundary"])

    def clock(self, now: float) -> float | None:
        """Processing time: the watermark to send at wall-clock ``now``, if a tick passed."""
        if self.event_time or now < self._next_boundary:
            return None
        self.watermark = now
        self._next_boundary = (math.floor(now / self.tick) + 1) * self.tick
        return now
