"""``cluster.chunks.cut`` (rows into per-worker chunks) and the event-time range rule."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from cluster.chunks import IntakeResult, cut
from cluster.errors import RecordError
from cluster.records import MAX_TIME, in_time_range, parse_event_time


def _reference(n_workers: int, times: list[float], workers: list[int], keep: list[int],
               cuts: list[int], marks: list[float]) -> list[tuple[list[list[Any]], float | None]]:
    """Row by row, the plain way: chunk k holds kept rows cuts[k-1]..cuts[k], by worker."""
    bounds = [0, *cuts, len(keep)]
    chunks = []
    for k in range(len(bounds) - 1):
        per_worker: list[list[Any]] = [[] for _ in range(n_workers)]
        for pos in range(bounds[k], bounds[k + 1]):
            row = keep[pos]
            per_worker[workers[row]].append((times[row], f"r{row}"))
        chunks.append((per_worker, marks[k] if k < len(marks) else None))
    return chunks


@pytest.mark.parametrize("seed", range(20))
def test_cut_matches_a_row_by_row_reference(seed: int) -> None:
    rng = random.Random(seed)
    n_workers = rng.randint(1, 5)
    n = rng.randint(0, 40)
    times = [float(rng.randint(0, 100)) for _ in range(n)]
    workers = [rng.randrange(n_workers) for _ in range(n)]
    keep = sorted(rng.sample(range(n), rng.randint(0, n)))
    cuts = sorted(rng.sample(range(1, len(keep)), rng.randint(0, max(0, len(keep) - 1)))) \
        if len(keep) > 1 else []
    marks = [float(rng.randint(0, 100)) for _ in range(len(cuts) + rng.randint(0, 1))][
        :len(cuts) + 1]
    payloads = [f"r{i}" for i in range(n)]
    result = IntakeResult()

    def take(sel: np.ndarray, t: np.ndarray) -> list[str]:
        return [payloads[i] for i in sel.tolist()]

    cut(n_workers, np.array(times, dtype=np.float64), np.array(workers, dtype=np.int64), take,
        np.array(keep, dtype=np.int64), cuts, marks, result, True)
    got = [([list(zip(c.times[w], c.events[w], strict=True)) for w in range(n_workers)],
            c.watermark) for c in result.chunks]
    assert got == _reference(n_workers, times, workers, keep, cuts, marks)
    assert result.accepted == len(keep)


def test_cut_keeps_arrays_for_column_payloads() -> None:
    result = IntakeResult()
    times = np.array([5.0, 6.0, 7.0])
    cut(2, times, np.array([1, 0, 1]), lambda sel, t: [int(i) for i in sel], np.arange(3),
        [], [], result, False)
    (chunk,) = result.chunks
    assert isinstance(chunk.times[1], np.ndarray) and chunk.times[1].tolist() == [5.0, 7.0]
    assert chunk.events == [[1], [0, 2]] and chunk.watermark is None


@pytest.mark.parametrize(("t", "inside"), [
    (0.0, True), (-0.5, False), (MAX_TIME - 1, True), (MAX_TIME, False), (math.nan, False),
    (math.inf, False), (-math.inf, False), (1767225600.0, True),
])
def test_the_event_time_range_is_one_rule_for_scalars_and_arrays(t: float, inside: bool) -> None:
    assert bool(in_time_range(t)) is inside
    assert in_time_range(np.array([1.0, t, 2.0])).tolist() == [True, inside, True]
    if inside:
        assert parse_event_time(t) == t
    else:
        with pytest.raises(RecordError, match=r"outside 1970\.\.3000"):
            parse_event_time(t)
