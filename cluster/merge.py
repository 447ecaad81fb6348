"""Merging shard state read in place from shared memory.

Every worker keeps each TimeWindowAnalyzer's windows in a slot-major ring in shared
memory: row ``slot`` holds one resolution period, column ``i`` the count of the
worker's ``i``-th key. When a period closes on every worker, the coordinator sums
that slot over the workers' arrays, by key name, and writes one row per key.

A worker gives the row of a key whose counts have all been read to a new key, and
moves a full ring to a bigger segment; its reports say so, and are applied before
the merge that could read the new key's counts or the new segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bspump.periods import is_closed
from cluster.outputs import number
from cluster.shm import Segment


def hashable_key(key: Any) -> Any:
    """Keys come back from msgpack as lists where they were tuples: make them hashable."""
    if isinstance(key, list):
        return tuple(hashable_key(k) for k in key)
    return key


def _sort_key(key: Any) -> tuple[str, str]:
    return (type(key).__name__, str(key))


class WindowMerger:
    """Collects closed periods of one TimeWindowAnalyzer and merges them over shards."""

    def __init__(self, analyzer_id: str, resolution: float, workers: int) -> None:
        self.analyzer_id = analyzer_id
        self.resolution = resolution
        self.keys: list[list[Any]] = [[] for _ in range(workers)]
        self.arrays: list[np.ndarray | None] = [None] * workers
        self.segments: list[Segment | None] = [None] * workers
        self.pending: dict[int, list[tuple[int, int]]] = {}

    def attach(self, worker: int, array: np.ndarray, segment: Segment | None = None) -> None:
        """The worker's window ring, mapped from shared memory (``segment``, if given)."""
        self.arrays[worker] = array
        self.segments[worker] = segment

    def report(self, worker: int, new_keys: Sequence[Any], closed: Sequence[Sequence[int]],
               rows: Sequence[Sequence[Any]] = (), segment: Sequence[Any] | None = None) -> None:
        """A worker's news: keys it added (in row order), rows it gave to other keys
        (``[row, key]``, in order), (period, slot) it closed, and the segment its ring
        moved to (``[name, shape, dtype]``).

        The worker leaves its previous segment's name for us to remove: it cannot know
        when we have mapped the segment it told us about before.
        """
        if segment is not None:
            name, shape, dtype = segment
            seg = Segment.attach(name, tuple(shape), dtype)
            previous = self.segments[worker]
            self.attach(worker, seg.array, seg)
            if previous is not None and previous.name != seg.name:
                previous.unlink()
        keys = self.keys[worker]
        if new_keys:
            keys.extend(hashable_key(k) for k in new_keys)
        for row, key in rows:
            keys[int(row)] = hashable_key(key)
        for period, slot in closed:
            self.pending.setdefault(int(period), []).append((worker, int(slot)))

    def merge_period(self, period: int) -> dict[Any, float]:
        """Sum one period over the workers that had data in it."""
        acc: dict[Any, float] = {}
        for worker, slot in self.pending.pop(period, []):
            array = self.arrays[worker]
            keys = self.keys[worker]
            if array is None:
                raise RuntimeError(f"worker {worker} reported windows before its segments")
            row = array[slot, : len(keys)]
            nz = np.flatnonzero(row)
            for i, v in zip(nz.tolist(), row[nz].tolist(), strict=True):
                k = keys[i]
                acc[k] = acc.get(k, 0.0) + v
        return acc

    def emit(self, watermark: float) -> list[dict[str, Any]]:
        """Rows of every pending period that closed at ``watermark``, oldest first."""
        rows: list[dict[str, Any]] = []
        res = self.resolution
        for period in sorted(p for p in self.pending if is_closed(p, res, watermark)):
            start = period * res
            merged = self.merge_period(period)
            try:
                ordered = sorted(merged)  # natural order: 2 before 10
            except TypeError:
                ordered = sorted(merged, key=_sort_key)  # mixed key types
            for key in ordered:
                rows.append({"window_start": number(start), "window_end": number(start + res),
                             "key": key, "count": number(merged[key])})
        return rows
