"""TimeWindowAnalyzer: counts per key in resolution periods, ticks, checkpoints, reports.

The ring the counts live in (key rows, period slots, growth) is
:class:`bspump.analyzer.windowring.WindowRing`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bspump.analyzer.windowring import WindowRing
from bspump.errors import CheckpointError, RecordError
from bspump.periods import next_boundary, period_end
from bspump.processor import Analyzer
from bspump.state import RestoreInfo, StateReader, StateWriter

if TYPE_CHECKING:
    from bspump.application import Application, RunInfo
    from bspump.batch import EventBatch
    from bspump.pipeline import Pipeline

# How many empty resolution periods on_tick is called for in one watermark jump;
# beyond this a gap in the data skips straight to the periods that have data.
MAX_TICKS_PER_JUMP = 100_000


class TimeWindowAnalyzer(WindowRing, Analyzer):
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
        self._init_ring()
        self._next_tick: float | None = None

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

    # -- event time, checkpoints, reports ---------------------------------------------------

    def _start(self, run: RunInfo) -> None:
        self._merge_lag = run.ring_span
        if self._ring is None:
            self._allocate(run)

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
                self._next_tick = period_end(min(counted), res)
            elif math.isfinite(watermark):
                self._next_tick = next_boundary(watermark, res)
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
        end = next_boundary(last_time, res)
        newest = max(self._slot_period, default=-1)
        if newest != -1:
            end = max(end, period_end(newest, res))
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
