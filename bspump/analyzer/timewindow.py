"""TimeWindowAnalyzer: counts per key in resolution periods, kept in shared memory."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bspump.errors import CheckpointError, RecordError
from bspump.processor import Analyzer
from bspump.state import RestoreInfo, StateReader, StateWriter

if TYPE_CHECKING:
    from bspump.application import Application, RunInfo
    from bspump.batch import EventBatch
    from bspump.pipeline import Pipeline

# How many empty resolution periods on_tick is called for in one watermark jump;
# beyond this a gap in the data skips straight to the periods that have data.
MAX_TICKS_PER_JUMP = 100_000

log = logging.getLogger("bspump-cluster.timewindow")


class TimeWindowAnalyzer(Analyzer):
    """Aggregates events over time windows; ``on_tick`` fires each resolution period.

    ``self.count(key, value=1)`` adds the current event to its resolution period
    under ``key``. Periods live in a ring of slots (``window_size / resolution`` at
    least) inside a ``(slots, max_keys)`` array; in a cluster run it is a shared
    memory segment that the coordinator reads when a period has closed on every
    worker, then writes one merged row per key. With ``count_field`` set, every
    event is counted under the value of that field before ``evaluate`` runs.

    ``max_keys`` is only the first width of the ring: the row of a key whose counts
    the coordinator has all read is given to the next new key, and a ring with no
    free row grows to twice its width. ``key_limit`` (0: none) caps the width; a
    record whose new key finds no row then goes to the dead letters.

    A subclass overrides ``evaluate(context, event)`` and ``on_tick(tick)``;
    ``tick`` is the end (epoch seconds) of the period that just closed.
    """

    ConfigDefaults: dict[str, Any] = {
        "window_size": 3600.0,
        "resolution": 60.0,
        "count_field": "",
        "max_keys": 1 << 16,
        "key_limit": 0,
        # Anomalies on the merged windows (checked by the coordinator): 0 = off.
        "anomaly_history": 0,
        "anomaly_threshold": 3.0,
    }
    _FRAMEWORK_ATTRS = frozenset({"window_size", "resolution", "max_keys", "count_field",
                                  "key_limit", "keys_refused", "anomaly_history",
                                  "anomaly_threshold"})

    def __init__(self, app: Application, pipeline: Pipeline, id: str | None = None,
                 config: Mapping[str, Any] | None = None, window_size: float = 3600,
                 resolution: float = 60, max_keys: int | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        self.window_size = float(self.setting("window_size", window_size))
        self.resolution = float(self.setting("resolution", resolution))
        if not self.resolution > 0:
            raise self.config_error("resolution", f"must be positive, got {self.resolution}")
        if self.window_size < self.resolution:
            raise self.config_error("window_size", f"must be at least resolution "
                                    f"({self.resolution:g}), got {self.window_size:g}")
        self.max_keys = int(self.setting("max_keys", max_keys or self.Config["max_keys"]))
        if self.max_keys < 1:
            raise self.config_error("max_keys", "must be at least 1")
        self.key_limit = int(self.Config["key_limit"])
        if self.key_limit and self.key_limit < self.max_keys:
            raise self.config_error("key_limit", f"must be 0 (no limit) or at least max_keys "
                                    f"({self.max_keys}), got {self.key_limit}")
        field = self.Config["count_field"]
        self.count_field: str | None = field or None
        self.keys_refused = 0  # records not counted because key_limit was reached
        self.anomaly_history = int(self.Config["anomaly_history"])
        self.anomaly_threshold = float(self.Config["anomaly_threshold"])
        if self.anomaly_history < 0 or self.anomaly_history == 1:
            raise self.config_error("anomaly_history", "must be 0 (off) or at least 2 periods, "
                                    f"got {self.anomaly_history}")
        if not self.anomaly_threshold > 0:
            raise self.config_error("anomaly_threshold",
                                    f"must be positive, got {self.anomaly_threshold}")
        self._keys: dict[Any, int] = {}
        self._key_list: list[Any] = []  # row -> key; None for a free row
        self._free: list[int] = []  # rows to give to new keys, the lowest last
        self._row_free = np.zeros(0, dtype=bool)
        self._reported_keys = 0
        self._reused: list[list[Any]] = []  # [row, key] given out since the last report
        self._grown = False  # the ring moved to a new segment since the last report
        self._ring: np.ndarray | None = None
        self._slot_period: list[int] = []
        self._slot_closed: list[bool] = []
        self._closed_at: list[float] = []  # the watermark that closed each slot
        self._closed: list[list[int]] = []
        self._code_rows: dict[str, np.ndarray] = {}
        self._next_tick: float | None = None
        self._watermark = -math.inf
        # How far the coordinator's merge may trail this worker's watermark (flow control
        # keeps it within max_lag, and ring_span is max_lag plus lateness and two ticks).
        self._merge_lag = 0.0
        self._ticking = False
        self._warned = False

    # -- the user API ----------------------------------------------------------------------

    def on_tick(self, tick: float) -> None:
        """Called once per closed resolution period; ``tick`` is its end time."""

    def count(self, key: Any, value: float = 1) -> None:
        """Count the current event into its resolution period under ``key``."""
        ring = self._ring
        if ring is None:
            ring = self._allocate(None)
        period = math.floor(self.Pipeline.event_time / self.resolution)
        slot = period % len(self._slot_period)
        if self._slot_period[slot] != period:
            self._open_slot(slot, period)
        row = self._keys.get(key)
        if row is None:
            row = self._add_key(key)
            if row < 0:
                self._refuse(1)
                raise RecordError(self._refusal(key))
            ring = self._ring  # a new key may have grown the ring
            assert ring is not None
        ring[slot, row] += value

    def process(self, context: dict[str, Any], event: Any) -> Any:
        """Count under ``count_field`` when configured, then :meth:`evaluate`."""
        if self.count_field is not None:
            key = event.get(self.count_field) if isinstance(event, dict) else None
            if key is not None:
                self.count(key)
        result = self.evaluate(context, event)
        return event if result is None else result

    def count_batch(self, keys: np.ndarray, times: np.ndarray, prefix: str | None = None,
                    values: np.ndarray | None = None) -> None:
        """Count many events at once: ``keys[i]`` at event time ``times[i]``.

        ``keys`` are values, or integer codes of ``prefix + str(code)`` keys. Per period
        in the batch, one ``np.bincount`` over key rows adds into the shared-memory ring.
        Events whose new key finds no row (``key_limit``) go to the dead letters.
        """
        refused = self._count_batch(keys, times, prefix, values)

        def record(i: int) -> dict[str, Any]:
            key = keys[i].item() if prefix is None else prefix + str(int(keys[i]))
            return {"key": key, "event_time": float(times[i])}

        self._dead_refused(self.count_batch, refused, record)

    def _dead_refused(self, step: Any, refused: np.ndarray, record: Any) -> None:
        """Events whose new key found no row (key_limit): dead letters, and dead in the
        ledger too, as on the per-event path where count() raises for them."""
        if not len(refused):
            return
        self.Pipeline.events_failed += len(refused)
        error = RecordError(self._refusal(None))
        for i in refused.tolist():
            self.Pipeline._dead_letter(step, record(i), error)

    def _count_batch(self, keys: np.ndarray, times: np.ndarray, prefix: str | None,
                     values: np.ndarray | None) -> np.ndarray:
        """Count a column; return the indices of the events it could not place."""
        nothing = np.zeros(0, dtype=np.int64)
        if len(keys) == 0:
            return nothing
        if self._ring is None:
            self._allocate(None)
        assert self._ring is not None
        rows = self._rows_of_column(keys, prefix)
        refused = nothing
        if rows.min() < 0:
            refused = np.flatnonzero(rows < 0)
            self._refuse(len(refused))
            placed = rows >= 0
            rows, times = rows[placed], times[placed]
            values = None if values is None else values[placed]
            if len(rows) == 0:
                return refused
        n_keys = len(self._key_list)
        periods = np.floor(times / self.resolution).astype(np.int64)
        ring_len = len(self._slot_period)
        first, last = int(periods.min()), int(periods.max())
        for period in (range(first, last + 1) if last - first < 64
                       else np.unique(periods).tolist()):
            mask = periods == period
            if first != last and not mask.any():
                continue
            slot = period % ring_len
            if self._slot_period[slot] != period:
                self._open_slot(slot, period)
            sel = rows if first == last else rows[mask]
            weights = None if values is None else (values if first == last else values[mask])
            self._ring[slot, :n_keys] += np.bincount(sel, weights=weights, minlength=n_keys)
        return refused

    def _rows_of_column(self, keys: np.ndarray, prefix: str | None) -> np.ndarray:
        if prefix is not None and keys.dtype.kind in "iu":
            table = self._code_rows.get(prefix)
            top = int(keys.max()) + 1
            if table is None or len(table) < top:
                grown = np.full(max(top, 2 * (len(table) if table is not None else 0)), -1,
                                dtype=np.int64)
                if table is not None:
                    grown[: len(table)] = table
                table = self._code_rows[prefix] = grown
            # A code refused at key_limit stays -1 and is tried again with the next batch.
            for code in np.unique(keys[table[keys] < 0]).tolist():
                table[code] = self._row_of(prefix + str(code))
            result: np.ndarray = table[keys]
            return result
        values, inverse = np.unique(keys, return_inverse=True)
        rows = np.array([self._row_of(v) for v in values.tolist()], dtype=np.int64)
        return rows[inverse]

    def _batch_step(self) -> Any:
        cls = type(self)
        if cls.process is not TimeWindowAnalyzer.process:
            return None
        user = None
        if cls.evaluate_batch is not Analyzer.evaluate_batch:
            user = self.evaluate_batch
        elif cls.evaluate is not Analyzer.evaluate:
            return None  # a per-event evaluate: the batch must become dicts
        field = self.count_field

        def count_then_evaluate(batch: EventBatch) -> None:
            if field is not None and field in batch:
                refused = self._count_batch(batch[field], batch.times,
                                            batch.prefixes.get(field), None)
                self._dead_refused(self.process, refused, batch.row)
            elif field is not None:
                raise KeyError(f"{self.Id}: count_field {field!r} is not in the batch")
            if user is not None:
                user(batch)

        return count_then_evaluate

    def _step(self) -> tuple[Any, bool]:
        if type(self).process is not TimeWindowAnalyzer.process:
            return self.process, False
        if self.count_field is None:
            return self.evaluate, True
        field, count, evaluate = self.count_field, self.count, self.evaluate

        def count_then_evaluate(context: dict[str, Any], event: Any) -> Any:
            key = event.get(field) if type(event) is dict else None
            if key is not None:
                count(key)
            return evaluate(context, event)

        return count_then_evaluate, True

    @property
    def window_array(self) -> np.ndarray | None:
        """The ring of period slots: ``[slot, key row]``."""
        return self._ring

    @property
    def keys(self) -> list[Any]:
        """Keys in row order (None for a free row)."""
        return self._key_list

    # -- state ----------------------------------------------------------------------------

    def _ring_length(self, run: RunInfo | None) -> int:
        span = run.ring_span if run is not None else 0.0
        window_slots = math.ceil(self.window_size / self.resolution)
        return max(window_slots, math.ceil(span / self.resolution) + 3)

    @property
    def _segment_name(self) -> str:
        return f"{self.Pipeline.Id}.{self.Id}.windows"

    def _allocate(self, run: RunInfo | None) -> np.ndarray:
        n = self._ring_length(run)
        self._ring = self.App.allocate(self._segment_name, (n, self.max_keys), np.float64)
        self._row_free = np.zeros(self.max_keys, dtype=bool)
        self._slot_period = [-1] * n
        self._slot_closed = [False] * n
        self._closed_at = [math.inf] * n
        return self._ring

    def _start(self, run: RunInfo) -> None:
        self._merge_lag = run.ring_span
        if self._ring is None:
            self._allocate(run)

    def _add_key(self, key: Any) -> int:
        """A row for a new key: a free one, a new one, one of a grown ring; -1 at key_limit."""
        if isinstance(key, list):
            key = tuple(key)
        # Freed rows are for data only: the coordinator waits for its merge before data,
        # not always before a watermark or the end, whose on_tick may count too.
        if self._free and not self._ticking:
            row = self._free.pop()
            self._row_free[row] = False
            self._key_list[row] = key
            self._reused.append([row, key])
        else:
            row = len(self._key_list)
            assert self._ring is not None
            if row >= self._ring.shape[1] and not self._grow():
                return -1
            self._key_list.append(key)
        self._keys[key] = row
        return row

    def _row_of(self, key: Any) -> int:
        if isinstance(key, list):  # msgpack gives tuples back as lists
            key = tuple(key)
        row = self._keys.get(key)
        return self._add_key(key) if row is None else row

    def _grow(self) -> bool:
        """Double the ring's width (up to key_limit) in a new segment; False at the limit."""
        ring = self._ring
        assert ring is not None
        width = ring.shape[1]
        new = 2 * width if not self.key_limit else min(2 * width, self.key_limit)
        if new <= width:
            return False
        self._ring = self.App.reallocate(self._segment_name, ring, (ring.shape[0], new))
        free = np.zeros(new, dtype=bool)
        free[:width] = self._row_free
        self._row_free = free
        self._grown = True
        log.info("%s: %d keys live on this worker; window ring grown to %d rows",
                 self.Id, len(self._keys), new)
        return True

    def _refuse(self, records: int) -> None:
        self.keys_refused += records
        if not self._warned:
            self._warned = True
            log.warning("%s", self._refusal(None) + " (this warning is given once; "
                        "every such record is in the dead letters)")

    def _refusal(self, key: Any) -> str:
        which = "a new key" if key is None else f"new key {key!r}"
        return (f"{self.Id}: key_limit={self.key_limit} reached: {which} has no row while "
                f"{len(self._keys)} keys hold counts not yet merged; raise key_limit "
                "in its config section")

    def _sweep(self) -> None:
        """Free the rows of keys whose every count the coordinator has read.

        A row is free when it is zero in every open slot and in every closed slot the
        coordinator may not have read yet. Data after watermark ``w`` is sent only once
        the merge has reached ``w - max_lag``, so a slot closed at ``c <= w - lag`` (and
        before ``w``, in an ack already applied) has been read. Called after each
        watermark while fewer than half the rows are free: not in the middle of a batch,
        whose new rows have no counts yet.
        """
        ring = self._ring
        if ring is None:
            return
        n = len(self._key_list)
        width = ring.shape[1]
        if width - n + len(self._free) >= width // 2:
            return
        merged = self._watermark - self._merge_lag
        busy = np.zeros(n, dtype=bool)
        for slot, period in enumerate(self._slot_period):
            if period == -1:
                continue
            closed_at = self._closed_at[slot]
            if self._slot_closed[slot] and closed_at <= merged and closed_at < self._watermark:
                continue
            busy |= ring[slot, :n] != 0
        freed = np.flatnonzero(~busy & ~self._row_free[:n])
        if not len(freed):
            return
        keys, key_list = self._keys, self._key_list
        for row in freed.tolist():
            del keys[key_list[row]]
            key_list[row] = None
        self._row_free[freed] = True
        self._free.extend(freed[::-1].tolist())
        for table in self._code_rows.values():
            table[np.isin(table, freed)] = -1

    def _open_slot(self, slot: int, period: int) -> None:
        old = self._slot_period[slot]
        if old != -1 and not self._slot_closed[slot]:
            # Flow control keeps this from happening; if it does, counts would mix.
            raise RuntimeError(f"{self.Id}: window ring overflow: period {period} needs the "
                               f"slot of open period {old}; raise window_size")
        assert self._ring is not None
        self._ring[slot, : len(self._key_list)] = 0
        self._slot_period[slot] = period
        self._slot_closed[slot] = False
        self._closed_at[slot] = math.inf

    def _close_until(self, watermark: float) -> None:
        res = self.resolution
        for slot, period in enumerate(self._slot_period):
            if period != -1 and not self._slot_closed[slot] and (period + 1) * res <= watermark:
                self._slot_closed[slot] = True
                self._closed_at[slot] = watermark
                self._closed.append([period, slot])

    def _advance(self, watermark: float) -> None:
        self._close_until(watermark)
        self._ticking = True
        try:
            self._tick_until(watermark)
        finally:
            self._ticking = False
        self._watermark = max(self._watermark, watermark)
        self._sweep()

    def _tick_until(self, watermark: float) -> None:
        res = self.resolution
        if self._next_tick is None:
            # Ticks start with the first period that had data, else the watermark's period.
            counted = [p for p in self._slot_period if p != -1]
            if counted:
                self._next_tick = (min(counted) + 1) * res
            elif math.isfinite(watermark):
                self._next_tick = (math.floor(watermark / res) + 1) * res
                return
            else:
                return
        if (watermark - self._next_tick) / res > MAX_TICKS_PER_JUMP:
            self._next_tick = (math.floor(watermark / res)) * res
        while self._next_tick <= watermark:
            tick = self._next_tick
            self._next_tick = tick + res
            try:
                self.on_tick(tick)
            except Exception as e:
                self.Pipeline._dead_letter(self.on_tick, {"tick": tick}, e)

    def _finish(self, last_time: float) -> None:
        if self._next_tick is None and max(self._slot_period, default=-1) == -1:
            return  # nothing was ever counted or ticked: no period to close
        res = self.resolution
        end = (math.floor(last_time / res) + 1) * res
        newest = max(self._slot_period, default=-1)
        if newest != -1:
            end = max(end, (newest + 1) * res)
        if self._next_tick is None:
            self._next_tick = end - res
        self._advance(end)

    def _checkpoint(self, writer: StateWriter) -> None:
        """Open periods (closed ones are merged already), their keys, the next tick."""
        super()._checkpoint(writer)
        if self._ring is None:
            return
        slots = [s for s, p in enumerate(self._slot_period)
                 if p != -1 and not self._slot_closed[s]]
        n = len(self._key_list)
        # Only keys with a count in an open period: the rest has been merged already.
        counts = self._ring[slots, :n]
        rows = np.flatnonzero(counts.any(axis=0)) if slots else np.zeros(0, dtype=np.int64)
        writer.put_array(f"tw.{self.Id}", counts[:, rows])
        writer.put_object(f"tw.{self.Id}", {
            "periods": [self._slot_period[s] for s in slots],
            "keys": [self._key_list[r] for r in rows.tolist()],
            "next_tick": self._next_tick,
        })

    def _restore(self, readers: Sequence[StateReader], info: RestoreInfo) -> None:
        """Add the open periods of the old workers this one takes over (sums stay right)."""
        super()._restore(readers, info)
        if self._ring is None:
            self._allocate(None)
        ticks = []
        for old, reader in enumerate(readers):
            meta = reader.get_object(f"tw.{self.Id}")
            if meta is None:
                continue
            if meta["next_tick"] is not None:
                ticks.append(meta["next_tick"])
            if not info.summable_from(old):
                continue
            counts = reader.get_array(f"tw.{self.Id}")
            if counts is None or not meta["periods"]:
                continue
            rows = np.array([self._row_of(k) for k in meta["keys"]], dtype=np.int64)
            if len(rows) and rows.min() < 0:
                raise CheckpointError(f"{self.Id}: the checkpoint's open periods hold more "
                                      f"keys than key_limit={self.key_limit} on worker "
                                      f"{info.worker}; raise key_limit or restore onto "
                                      "more workers")
            for period, values in zip(meta["periods"], counts, strict=True):
                slot = period % len(self._slot_period)
                if self._slot_period[slot] != period:
                    self._open_slot(slot, period)
                self._ring[slot, rows] += values  # type: ignore[index]
        # Every worker saw the same watermarks, so every old worker had the same next tick.
        self._next_tick = max(ticks) if ticks else None

    def _report(self) -> dict[str, Any] | None:
        """New rows (in row order), reused rows ``[row, key]``, closed slots, a new segment.

        The coordinator applies a report before it merges anything at its watermark, so
        a reused row or a grown ring is known before any slot with the new key's counts.
        """
        new_keys = self._key_list[self._reported_keys:]
        if not new_keys and not self._closed and not self._reused and not self._grown:
            return None
        self._reported_keys = len(self._key_list)
        closed, self._closed = self._closed, []
        report: dict[str, Any] = {"keys": new_keys, "closed": closed}
        if self._reused:
            report["rows"], self._reused = self._reused, []
        if self._grown:
            self._grown = False
            segment = self.App.segment_info(self._segment_name)
            if segment is not None:
                report["segment"] = segment
        return report
