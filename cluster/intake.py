"""Intake: from source records to per-worker batches, event times and watermarks.

The coordinator (and the in-process topology) feed every record through one
:class:`Intake`. It decodes only what routing needs (the shard key and the event
time), decides lateness against the watermark *before* the record, and cuts the
stream into chunks: the data of a chunk is sent first, then its watermark, so a
worker never sees a watermark that overtakes data it has not received.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np

from cluster.config import PipelineSettings
from cluster.errors import RecordError
from cluster.jumps import Held, JumpGuard
from cluster.layout import Layout, check_key, geo_cell, key_extractor
from cluster.records import (
    BOM,
    MAX_TIME,
    MIN_TIME,
    Limits,
    batch_may_be_too_deep,
    depth_exceeds,
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
    # Change in the number of held records (see cluster.jumps): a batch's records are
    # accepted + dead + late + held; a release or a refusal moves held ones on.
    held: int = 0


def _placed(where: Callable[[int], str] | None, i: int, error: RecordError) -> str:
    """A dead letter's reason, after the record's place when it is known."""
    return f"{where(i)}: {error}" if where is not None else str(error)


class Intake:
    """Routes records to workers and keeps the watermark (see module docstring)."""

    def __init__(self, routing: PipelineSettings, layout: Layout, tick: float,
                 limits: Limits | None = None) -> None:
        if not tick > 0:
            raise ValueError("tick must be positive")
        self.limits = limits or Limits()
        self.routing = routing
        self.layout = layout
        self.tick = tick
        self.lateness = routing.allowed_lateness
        self.event_time = routing.time_field is not None
        self.watermark = -math.inf
        self.max_time = -math.inf
        self._next_boundary = -math.inf
        self.jumps = JumpGuard(routing.max_time_jump if self.event_time else 0.0,
                               routing.time_jump_confirm)
        self._key = key_extractor(routing.shard_key)
        self._time_field = routing.time_field
        self._cache: dict[Any, int] = {}
        self._code_tables: dict[str, np.ndarray] = {}
        route = _route_struct(routing)
        self._decode_all = msgspec.json.Decoder(list[route])  # type: ignore[valid-type]
        self._decode_one: msgspec.json.Decoder[Any] = msgspec.json.Decoder(route)

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
                if not ((times >= MIN_TIME) & (times < MAX_TIME)).all():
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

        self._vector_split(times, workers, take, now, result)
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
            bad = ~((times >= MIN_TIME) & (times < MAX_TIME))
            if bad.any():
                for i in np.flatnonzero(bad).tolist():
                    result.dead.append(Rejected(batch.row(i), time_out_of_range(times[i])))
                good = np.flatnonzero(~bad)
                batch, times, workers = batch[good], times[good], workers[good]

        def take(sel: np.ndarray, t: np.ndarray) -> Any:
            part = batch[sel]
            part.times = t
            return part

        self._vector_split(times, workers, take, now, result, row=batch.row)
        return result

    def _vector_split(self, times: np.ndarray, workers: np.ndarray,
                      take: Callable[[np.ndarray, np.ndarray], Any], now: float | None,
                      result: IntakeResult, row: Callable[[int], Any] | None = None) -> None:
        """Lateness, watermark and per-worker chunks for every path, vectorized.

        The rules are sequential: a row is late when its time is below the watermark
        before it; the watermark is the newest time so far minus the lateness; a chunk
        (and its watermark message) ends where the watermark crosses a tick boundary,
        the row that crossed it going into the next chunk.

        ``take(rows, times)`` builds one worker's payload; ``row(i)`` the record of row
        ``i`` for the late events (raw payloads come back through take)."""
        n = len(times)
        if n == 0:
            return
        if not self.event_time:
            self._emit(times, workers, take, np.arange(n), [], [], result, row is None)
            return
        guard = self.jumps
        if guard.active and (guard.held or guard.any_ahead(times, self.max_time)):
            self._split_guarded(times, workers, take, result, row)
            return
        self._in_time(times, workers, take, result, row, row is None)

    def _in_time(self, times: np.ndarray, workers: np.ndarray,
                 take: Callable[[np.ndarray, np.ndarray], Any], result: IntakeResult,
                 row: Callable[[int], Any] | None, as_lists: bool) -> None:
        """The rules of _vector_split for rows no record is held among."""
        # The sequential rules, vectorized: a row is late against the watermark before it.
        cm = np.maximum(np.maximum.accumulate(times), self.max_time)
        w_after = np.maximum(cm - self.lateness, self.watermark)
        w_before = np.concatenate(([self.watermark], w_after[:-1]))
        late = times < w_before
        if late.any():
            for j in np.flatnonzero(late).tolist():
                record = row(j) if row is not None else take(np.array([j]), times[j:j + 1])[0]
                result.late.append(Rejected(record, "late", float(times[j])))
        keep = np.flatnonzero(~late)
        w_keep = w_after[keep]
        self.max_time = float(cm[-1])
        self.watermark = float(w_after[-1])
        # The cuts: rows where the watermark's tick number goes up.
        tick_of = np.floor(w_keep / self.tick)
        first = round(self._next_boundary / self.tick) - 1 \
            if math.isfinite(self._next_boundary) else -math.inf
        previous = np.concatenate(([first], tick_of[:-1]))
        cuts = np.flatnonzero(tick_of > previous).tolist()
        if cuts:
            self._next_boundary = (float(tick_of[cuts[-1]]) + 1) * self.tick
        self._emit(times, workers, take, keep, cuts, [float(w_keep[c]) for c in cuts], result,
                   as_lists)

    def _split_guarded(self, times: np.ndarray, workers: np.ndarray,
                       take: Callable[[np.ndarray, np.ndarray], Any], result: IntakeResult,
                       row: Callable[[int], Any] | None) -> None:
        """A batch with a record far ahead, or while some are held: row by row (rare).

        Runs of rows in time go through :meth:`_in_time` as usual; a row too far ahead
        is held; the hold list is released or refused as :mod:`cluster.jumps` says.
        """
        guard = self.jumps
        front = self.max_time
        normal: list[int] = []

        def flush() -> None:
            if normal:
                idx = np.array(normal, dtype=np.int64)
                self._in_time(times[idx], workers[idx], lambda sel, t: take(idx[sel], t),
                              result, None if row is None else (lambda j: row(int(idx[j]))),
                              row is None)
                normal.clear()

        for j, t in enumerate(times.tolist()):
            if guard.is_ahead(t, front):
                part = take(np.array([j]), times[j:j + 1])
                payload = part[0] if isinstance(part, list) else part.row(0)
                guard.held.append(Held(t, int(workers[j]), payload,
                                       row(j) if row is not None else payload))
                result.held += 1
                if len(guard.held) >= guard.confirm:
                    flush()
                    self._release(result)
                    front = self.max_time
                continue
            normal.append(j)
            front = max(front, t)
            if guard.held:
                guard.since += 1
                if guard.since >= guard.confirm:
                    flush()
                    for h in guard.take():
                        result.dead.append(Rejected(h.record, guard.refusal(h, front), h.time))
                        result.held -= 1
                        guard.refused += 1
        flush()

    def _release(self, result: IntakeResult) -> None:
        """Let every held record in, in input order, as if it had just arrived."""
        held = self.jumps.take()
        if not held:
            return
        self.jumps.released += len(held)
        result.held -= len(held)
        times = np.array([h.time for h in held], dtype=np.float64)
        workers = np.array([h.worker for h in held], dtype=np.int64)
        self._in_time(times, workers, lambda sel, t: [held[i].payload for i in sel.tolist()],
                      result, lambda j: held[j].record, True)

    def release_held(self) -> IntakeResult:
        """End of input: records still held go in (nothing contradicted their jump)."""
        result = IntakeResult()
        self._release(result)
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

    def _emit(self, times: np.ndarray, workers: np.ndarray,
              take: Callable[[np.ndarray, np.ndarray], Any], keep: np.ndarray,
              cuts: list[int], marks: list[float], result: IntakeResult,
              as_lists: bool) -> None:
        """Chunks of rows ``keep`` split at ``cuts`` (watermark ``marks``), by worker.

        Rows are ordered by worker once (stable, so each worker's rows stay in input
        order) and taken once; every chunk is then a slice of a worker's block. Times go
        as lists with per-record payloads, as arrays inside EventBatches.
        """
        n_workers = self.layout.workers
        owner = workers[keep]
        order = np.argsort(owner, kind="stable")
        ordered = keep[order]
        payload = take(ordered, times[ordered])
        ordered_times = times[ordered]
        ends = np.cumsum(np.bincount(owner, minlength=n_workers))
        starts = ends - np.bincount(owner, minlength=n_workers)
        bounds = np.array([0, *cuts, len(keep)])
        # Where each chunk bound falls inside each worker's block (positions in keep).
        edges = [int(starts[w]) + np.searchsorted(order[starts[w]:ends[w]], bounds)
                 for w in range(n_workers)]
        for k in range(len(bounds) - 1):
            chunk = self._new_chunk()
            for w in range(n_workers):
                s, e = int(edges[w][k]), int(edges[w][k + 1])
                if e > s:
                    t = ordered_times[s:e]
                    chunk.times[w] = t.tolist() if as_lists else t
                    chunk.events[w] = payload[s:e]
            if k < len(marks):
                chunk.watermark = marks[k]
            result.chunks.append(chunk)
        result.accepted += len(keep)

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
        """Route records whose key and time are known: the rules of _vector_split."""
        if not records:
            result.chunks.append(self._new_chunk())
            return
        workers = np.fromiter(map(self._worker, keys), dtype=np.int64, count=len(keys))
        t = np.full(len(keys), now if now is not None else 0.0) if not self.event_time \
            else np.asarray(times, dtype=np.float64)

        def take(sel: np.ndarray, _t: np.ndarray) -> list[Any]:
            return [records[i] for i in sel.tolist()]

        self._vector_split(t, workers, take, now, result)

    def state(self) -> dict[str, Any]:
        """Watermark bookkeeping and held records, for a checkpoint manifest."""
        return {"watermark": self.watermark, "max_time": self.max_time,
                "next_boundary": self._next_boundary, "jumps": self.jumps.state()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.watermark = float(state["watermark"])
        self.max_time = float(state["max_time"])
        self._next_boundary = float(state["next_boundary"])
        self.jumps.set_state(state.get("jumps"))

    def clock(self, now: float) -> float | None:
        """Processing time: the watermark to send at wall-clock ``now``, if a tick passed."""
        if self.event_time or now < self._next_boundary:
            return None
        self.watermark = now
        self._next_boundary = (math.floor(now / self.tick) + 1) * self.tick
        return now
