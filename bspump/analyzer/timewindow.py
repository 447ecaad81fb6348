"""TimeWindowAnalyzer: counts per key in resolution periods, kept in shared memory."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from bspump.processor import Analyzer, RestoreInfo

if TYPE_CHECKING:
    from bspump.application import Application, RunInfo
    from bspump.batch import EventBatch
    from bspump.pipeline import Pipeline
    from cluster.checkpoint import ShardReader, ShardWriter

# How many empty resolution periods on_tick is called for in one watermark jump;
# beyond this a gap in the data skips straight to the periods that have data.
MAX_TICKS_PER_JUMP = 100_000


class TimeWindowAnalyzer(Analyzer):
    """Aggregates events over time windows; ``on_tick`` fires each resolution period.

    ``self.count(key, value=1)`` adds the current event to its resolution period
    under ``key``. Periods live in a ring of slots (``window_size / resolution`` at
    least) inside a ``(slots, max_keys)`` array; in a cluster run it is a shared
    memory segment that the coordinator reads when a period has closed on every
    worker, then writes one merged row per key. With ``count_field`` set, every
    event is counted under the value of that field before ``evaluate`` runs.

    A subclass overrides ``evaluate(context, event)`` and ``on_tick(tick)``;
    ``tick`` is the end (epoch seconds) of the period that just closed.
    """

    ConfigDefaults: dict[str, Any] = {
        "window_size": 3600.0,
        "resolution": 60.0,
        "count_field": "",
        "max_keys": 1 << 16,
    }
    _FRAMEWORK_ATTRS = frozenset({"window_size", "resolution", "max_keys", "count_field"})

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
        field = self.Config["count_field"]
        self.count_field: str | None = field or None
        self._keys: dict[Any, int] = {}
        self._key_list: list[Any] = []
        self._reported_keys = 0
        self._ring: np.ndarray | None = None
        self._slot_period: list[int] = []
        self._slot_closed: list[bool] = []
        self._closed: list[list[int]] = []
        self._code_rows: dict[str, np.ndarray] = {}
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
        """
        if len(keys) == 0:
            return
        if self._ring is None:
            self._allocate(None)
        assert self._ring is not None
        rows = self._rows_of_column(keys, prefix)
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
                self.count_batch(batch[field], batch.times, batch.prefixes.get(field))
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
        """Keys in row order."""
        return self._key_list

    # -- state ----------------------------------------------------------------------------

    def _ring_length(self, run: RunInfo | None) -> int:
        span = run.ring_span if run is not None else 0.0
        window_slots = math.ceil(self.window_size / self.resolution)
        return max(window_slots, math.ceil(span / self.resolution) + 3)

    def _allocate(self, run: RunInfo | None) -> np.ndarray:
        n = self._ring_length(run)
        self._ring = self.App.allocate(f"{self.Pipeline.Id}.{self.Id}.windows",
                                       (n, self.max_keys), np.float64)
        self._slot_period = [-1] * n
        self._slot_closed = [False] * n
        return self._ring

    def _start(self, run: RunInfo) -> None:
        if self._ring is None:
            self._allocate(run)

    def _add_key(self, key: Any) -> int:
        row = len(self._key_list)
        if row >= self.max_keys:
            raise OverflowError(f"{self.Id}: more than max_keys={self.max_keys} keys; "
                                "raise max_keys in its config section")
        if isinstance(key, list):
            key = tuple(key)
        self._keys[key] = row
        self._key_list.append(key)
        return row

    def _row_of(self, key: Any) -> int:
        if isinstance(key, list):  # msgpack gives tuples back as lists
            key = tuple(key)
        row = self._keys.get(key)
        return self._add_key(key) if row is None else row

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

    def _close_until(self, watermark: float) -> None:
        res = self.resolution
        for slot, period in enumerate(self._slot_period):
            if period != -1 and not self._slot_closed[slot] and (period + 1) * res <= watermark:
                self._slot_closed[slot] = True
                self._closed.append([period, slot])

    def _advance(self, watermark: float) -> None:
        self._close_until(watermark)
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

    def _checkpoint(self, writer: ShardWriter) -> None:
        """Open periods (closed ones are merged already), their keys, the next tick."""
        super()._checkpoint(writer)
        if self._ring is None:
            return
        slots = [s for s, p in enumerate(self._slot_period)
                 if p != -1 and not self._slot_closed[s]]
        n = len(self._key_list)
        writer.put_array(f"tw.{self.Id}", self._ring[slots, :n] if slots
                         else np.zeros((0, n)))
        writer.put_object(f"tw.{self.Id}", {
            "periods": [self._slot_period[s] for s in slots],
            "keys": list(self._key_list),
            "next_tick": self._next_tick,
        })

    def _restore(self, readers: list[ShardReader], info: RestoreInfo) -> None:
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
            for period, values in zip(meta["periods"], counts, strict=True):
                slot = period % len(self._slot_period)
                if self._slot_period[slot] != period:
                    self._open_slot(slot, period)
                self._ring[slot, rows] += values  # type: ignore[index]
        # Every worker saw the same watermarks, so every old worker had the same next tick.
        self._next_tick = max(ticks) if ticks else None

    def _report(self) -> dict[str, Any] | None:
        new_keys = self._key_list[self._reported_keys:]
        if not new_keys and not self._closed:
            return None
        self._reported_keys = len(self._key_list)
        closed, self._closed = self._closed, []
        return {"keys": new_keys, "closed": closed}
