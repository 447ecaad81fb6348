"""The storage behind a TimeWindowAnalyzer: a ring of period slots by key rows.

Counts live in a ``(slots, rows)`` array the Application allocates (shared memory on
a worker, so the coordinator reads closed slots in place). This module decides which
row a key gets, grows the array when rows run out (up to ``key_limit``), frees the rows
of keys whose counts the coordinator has read, and opens and closes slots as event
time moves. :class:`~bspump.analyzer.timewindow.TimeWindowAnalyzer` counts into it.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from bspump.periods import is_closed

if TYPE_CHECKING:
    from bspump.application import Application, RunInfo
    from bspump.pipeline import Pipeline

log = logging.getLogger("bspump-cluster.timewindow")


class WindowRing:
    """Key rows and period slots of a window ring; a base of TimeWindowAnalyzer.

    It is a base class rather than an attribute so that the per-event path reads the
    ring's state as the analyzer's own attributes, at no extra lookup per event.
    """

    # Set by the analyzer (its configuration and place in the pipeline).
    App: Application
    Pipeline: Pipeline
    Id: str
    window_size: float
    resolution: float
    max_keys: int
    key_limit: int
    keys_refused: int

    def _init_ring(self) -> None:
        """Empty state: the array itself is allocated when the run starts."""
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
        self._watermark = -math.inf
        # How far the coordinator's merge may trail this worker's watermark (flow control
        # keeps it within max_lag, and ring_span is max_lag plus lateness and two ticks).
        self._merge_lag = 0.0
        self._ticking = False
        self._warned = False

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
                 self.Id, len(self._keys), new,
                 extra={"event": "window_ring_grown", "analyzer": self.Id,
                        "keys": len(self._keys), "rows": new})
        return True

    def _refuse(self, records: int) -> None:
        self.keys_refused += records
        if not self._warned:
            self._warned = True
            log.warning("%s", self._refusal(None) + " (this warning is given once; "
                        "every such record is in the dead letters)",
                        extra={"event": "key_limit_reached", "analyzer": self.Id})

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
            if period != -1 and not self._slot_closed[slot] \
                    and is_closed(period, res, watermark):
                self._slot_closed[slot] = True
                self._closed_at[slot] = watermark
                self._closed.append([period, slot])

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
