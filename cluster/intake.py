"""Intake: from source records to per-worker batches, event times and watermarks.

The coordinator feeds every record through one
:class:`Intake`. It decodes only what routing needs (the shard key and the event
time) and finds each record's worker; :class:`cluster.eventtime.EventClock` then
decides lateness against the watermark *before* the record and cuts the stream into
:class:`cluster.chunks.Chunk` s: the data of a chunk is sent first, then its watermark,
so a worker never sees a watermark that overtakes data it has not received.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np

from cluster.chunks import Chunk, IntakeResult, Rejected, empty_chunk
from cluster.config import PipelineSettings
from cluster.errors import RecordError
from cluster.eventtime import EventClock
from cluster.jumps import JumpGuard
from cluster.layout import Layout, check_key, geo_cell, key_extractor
from cluster.records import (
    BOM,
    Limits,
    batch_may_be_too_deep,
    depth_exceeds,
    in_time_range,
    parse_event_time,
    preview,
    preview_object,
    time_out_of_range,
    too_deep,
    too_deep_reason,
)

__all__ = ["Chunk", "Intake", "IntakeResult", "Rejected", "parse_event_time"]

_CACHE_LIMIT = 1 << 20


def _route_struct(routing: PipelineSettings) -> type:
    """A msgspec Struct of just the fields routing needs (missing ones stay UNSET)."""
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    spec = routing.shard_key
    if spec.geo is not None:
        fields += [("la", Any, msgspec.UNSET), ("lo", Any, msgspec.UNSET)]
        rename.update(la=spec.geo[0], lo=spec.geo[1])
    else:
        fields.append(("k", Any, msgspec.UNSET))
        rename["k"] = str(spec.field)
    if routing.time_field:
        fields.append(("t", Any, msgspec.UNSET))
        rename["t"] = routing.time_field
    return msgspec.defstruct("Route", fields, rename=rename)


_get_t = attrgetter("t")
_get_k = attrgetter("k")


def _placed(where: Callable[[int], str] | None, i: int, error: RecordError) -> str:
    """A dead letter's reason, after the record's place when it is known."""
    return f"{where(i)}: {error}" if where is not None else str(error)


class Intake:
    """Routes records to workers; its :class:`EventClock` (``time``) keeps the watermark."""

    def __init__(self, routing: PipelineSettings, layout: Layout, tick: float,
                 limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.routing = routing
        self.layout = layout
        self.time = EventClock(layout.workers, tick, routing.allowed_lateness,
                               routing.time_field is not None, routing.max_time_jump,
                               routing.time_jump_confirm)
        self._key = key_extractor(routing.shard_key)
        self._time_field = routing.time_field
        self._cache: dict[Any, int] = {}
        self._code_tables: dict[str, np.ndarray] = {}
        route = _route_struct(routing)
        self._decode_all = msgspec.json.Decoder(list[route])  # type: ignore[valid-type]
        self._decode_one: msgspec.json.Decoder[Any] = msgspec.json.Decoder(route)

    # -- the event-time side, kept in self.time -------------------------------------------

    @property
    def watermark(self) -> float:
        """The watermark after the records fed so far (-inf before any)."""
        return self.time.watermark

    @property
    def max_time(self) -> float:
        """The newest event time accepted so far (-inf before any)."""
        return self.time.max_time

    @property
    def jumps(self) -> JumpGuard:
        """The far-ahead records held now, and the counts of those released and refused."""
        return self.time.jumps

    def release_held(self) -> IntakeResult:
        """End of input: records still held go in (nothing contradicted their jump)."""
        return self.time.release_held()

    def state(self) -> dict[str, Any]:
        """Watermark bookkeeping and held records, for a checkpoint manifest."""
        return self.time.state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.time.set_state(state)

    def clock(self, now: float) -> float | None:
        """Processing time: the watermark to send at wall-clock ``now``, if a tick passed."""
        return self.time.clock(now)

    # -- routing ---------------------------------------------------------------------------

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

    def feed(self, records: list[Any], now: float | None = None,
             where: Callable[[int], str] | None = None) -> IntakeResult:
        """Route one batch of decoded records; ``now`` stamps them in processing time.

        ``where(i)`` names the origin of record ``i`` for dead letters, when the source
        knows it. Records are checked like raw ones (nested at most
        ``max_record_depth``), since a source of the user's own may build any value.
        """
        result = IntakeResult()
        key_of = self._key
        tf = self._time_field
        max_depth = self.limits.max_depth
        kept: list[Any] = []
        keys: list[Any] = []
        times: list[float] = []
        for i, record in enumerate(records):
            try:
                if depth_exceeds(record, max_depth):
                    # Too deep to write as JSON: a dead letter keeps bounded text only.
                    result.dead.append(Rejected(preview_object(record), _placed(
                        where, i, RecordError(too_deep_reason(self.limits)))))
                    continue
                key = key_of(record)
                if tf is None:
                    t = 0.0
                else:
                    try:
                        raw_time = record[tf]
                    except KeyError:
                        raise RecordError(f"missing time field {tf!r}") from None
                    t = parse_event_time(raw_time)
            except RecordError as e:
                result.dead.append(Rejected(record, _placed(where, i, e)))
                continue
            kept.append(record)
            keys.append(key)
            times.append(t)
        self._split(kept, keys, times, now, result)
        return result

    def feed_raw(self, lines: list[bytes], where: Callable[[int], str],
                 now: float | None = None) -> IntakeResult:
        """Route undecoded JSON objects: only the shard key and time fields are decoded.

        ``where(i)`` names the origin of line ``i`` (``file:line``) for dead letters.
        """
        result = IntakeResult()
        joined = b"[" + b",".join(lines) + b"]"
        routes: list[Any] | None = None
        if not batch_may_be_too_deep(joined, len(lines), self.limits):
            try:
                routes = self._decode_all.decode(joined)
            except (msgspec.DecodeError, RecursionError):
                pass  # some line is not a usable object: judge each one alone
        if routes is None:
            # A byte-order mark costs no record (a file made of several files has some).
            lines = [line[len(BOM):] if line.startswith(BOM) else line for line in lines]
            routes = [self._decode_one_line(line, where(i), result)
                      for i, line in enumerate(lines)]
        elif self._vector_raw(lines, routes, now, result):
            return result
        spec = self.routing.shard_key
        geo = spec.geo
        name = spec.field or ""
        tf = self._time_field
        unset = msgspec.UNSET
        kept: list[bytes] = []
        keys: list[Any] = []
        times: list[float] = []
        for i, r in enumerate(routes):
            if r is None:
                continue
            try:
                if geo is not None:
                    if r.la is unset or r.lo is unset:
                        missing = geo[0] if r.la is unset else geo[1]
                        raise RecordError(f"missing shard key field {missing!r}")
                    key = geo_cell(geo, r.la, r.lo)
                else:
                    if r.k is unset:
                        raise RecordError(f"missing shard key field {name!r}")
                    key = check_key(name, r.k)
                if tf is None:
                    t = 0.0
                elif r.t is unset:
                    raise RecordError(f"missing time field {tf!r}")
                else:
                    t = parse_event_time(r.t)
            except RecordError as e:
                result.dead.append(Rejected(preview(lines[i]), f"{where(i)}: {e}"))
                continue
            kept.append(lines[i])
            keys.append(key)
            times.append(t)
        self._split(kept, keys, times, now, result)
        return result

    def _vector_raw(self, lines: list[bytes], routes: list[Any], now: float | None,
                    result: IntakeResult) -> bool:
        """The common case of a raw batch, vectorized: every record has a usable key and
        time. Returns False (nothing done) when any record needs the per-record path."""
        spec = self.routing.shard_key
        if spec.geo is not None or not routes:
            return False
        n = len(routes)
        tf = self._time_field
        try:
            if tf is None:
                times = np.full(n, now if now is not None else 0.0)
            else:
                times = np.fromiter(map(_get_t, routes), dtype=np.float64, count=n)
                if not in_time_range(times).all():
                    return False
            cache = self._cache
            keys = list(map(_get_k, routes))
            workers = np.fromiter(map(cache.get, keys, repeat(-1, n)), dtype=np.int64, count=n)
        except (TypeError, ValueError, OverflowError):
            return False  # a missing, null or odd field somewhere: the careful path
        unknown = np.flatnonzero(workers < 0).tolist()
        name = str(spec.field)
        for i in unknown:
            key = keys[i]
            if key is msgspec.UNSET or key is None or isinstance(key, (dict, list)):
                return False
            workers[i] = self._worker(check_key(name, key))

        def take(sel: np.ndarray, t: np.ndarray) -> list[bytes]:
            return [lines[i] for i in sel.tolist()]

        self.time.split(times, workers, take, result)
        return True

    def feed_columns(self, batch: Any, now: float | None = None) -> IntakeResult:
        """Route an EventBatch (numpy columns) with vectorized lookups; rows never become dicts.

        Falls back to the per-record path when the shard key or the time field is not a
        plain column (geo cells), so the results are the same either way.
        """
        spec = self.routing.shard_key
        tf = self._time_field
        if spec.geo is not None or spec.field not in batch or (tf is not None
                                                              and tf not in batch):
            return self.feed(batch.to_dicts(), now)
        result = IntakeResult()
        workers = self._column_workers(batch, str(spec.field))
        if tf is None:
            times = np.full(len(batch), now if now is not None else 0.0)
        else:
            times = np.asarray(batch[tf], dtype=np.float64)
            bad = ~in_time_range(times)
            if bad.any():
                for i in np.flatnonzero(bad).tolist():
                    result.dead.append(Rejected(batch.row(i), time_out_of_range(times[i])))
                good = np.flatnonzero(~bad)
                batch, times, workers = batch[good], times[good], workers[good]

        def take(sel: np.ndarray, t: np.ndarray) -> Any:
            part = batch[sel]
            part.times = t
            return part

        self.time.split(times, workers, take, result, row=batch.row)
        return result

    def _column_workers(self, batch: Any, name: str) -> np.ndarray:
        """The worker of every row, from a lookup table per distinct key."""
        col = batch[name]
        prefix = batch.prefixes.get(name)
        if prefix is not None and col.dtype.kind in "iu" and (len(col) == 0 or col.min() >= 0):
            table = self._code_tables.get(prefix)
            top = int(col.max()) + 1 if len(col) else 0
            if table is None or len(table) < top:
                grown = np.full(max(top, 2 * len(table) if table is not None else 0), -1,
                                dtype=np.int64)
                if table is not None:
                    grown[: len(table)] = table
                table = self._code_tables[prefix] = grown
            if len(col):
                unknown = np.unique(col[table[col] < 0])
                for code in unknown.tolist():
                    table[code] = self._worker(prefix + str(code))
            result: np.ndarray = table[col]
            return result
        values, inverse = np.unique(col, return_inverse=True)
        if prefix is not None:
            owners = [self._worker(prefix + str(v)) for v in values.tolist()]
        else:
            owners = [self._worker(v) for v in values.tolist()]
        return np.asarray(owners, dtype=np.int64)[inverse]

    def _decode_one_line(self, line: bytes, where: str, result: IntakeResult) -> Any:
        """The routing fields of one raw record, or None after a dead letter for it."""
        if too_deep(line, self.limits):
            result.dead.append(Rejected(preview(line), f"{where}: {too_deep_reason(self.limits)}"))
            return None
        try:
            return self._decode_one.decode(line)
        except msgspec.ValidationError:
            reason = "not a JSON object"
        except msgspec.DecodeError as e:
            reason = f"malformed JSON: {e}"
        except RecursionError:  # not reached after too_deep; a decoder crash costs one record
            reason = too_deep_reason(self.limits)
        result.dead.append(Rejected(preview(line), f"{where}: {reason}"))
        return None

    def _split(self, records: list[Any], keys: list[Any], times: list[float],
               now: float | None, result: IntakeResult) -> None:
        """Route records whose key and time are known: the rules of EventClock.split."""
        if not records:
            result.chunks.append(empty_chunk(self.layout.workers))
            return
        workers = np.fromiter(map(self._worker, keys), dtype=np.int64, count=len(keys))
        t = np.full(len(keys), now if now is not None else 0.0) if not self.time.event_time \
            else np.asarray(times, dtype=np.float64)

        def take(sel: np.ndarray, _t: np.ndarray) -> list[Any]:
            return [records[i] for i in sel.tolist()]

        self.time.split(t, workers, take, result)

