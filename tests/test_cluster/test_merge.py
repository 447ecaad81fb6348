"""WindowMerger: closed periods summed over workers, by key name, in key order."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import numpy as np

from cluster.merge import WindowMerger, hashable_key

RES = 60.0
SLOTS = 5


def build(workers: int, counts: list[dict[int, dict[Any, float]]],
          seed: int = 0) -> tuple[WindowMerger, list[np.ndarray]]:
    """Fill each worker's ring with ``counts[w][period][key]``, keys in a shuffled row order."""
    rng = random.Random(seed)
    merger = WindowMerger("A", RES, workers)
    arrays = []
    for w in range(workers):
        keys = sorted({k for per in counts[w].values() for k in per}, key=repr)
        rng.shuffle(keys)
        array = np.zeros((SLOTS, 16))
        for period, per in counts[w].items():
            for key, n in per.items():
                array[period % SLOTS, keys.index(key)] = n
        merger.attach(w, array)
        # Keys arrive in two reports, as a worker learns them.
        half = len(keys) // 2
        merger.report(w, keys[:half], [])
        merger.report(w, keys[half:], [[p, p % SLOTS] for p in sorted(counts[w])])
        arrays.append(array)
    return merger, arrays


def test_same_key_summed_across_workers_with_different_row_orders() -> None:
    counts = [
        {100: {"a": 1, "b": 2, "c": 3}},
        {100: {"c": 10, "a": 20, "d": 5}},
        {100: {"d": 1, "b": 1}},
    ]
    merger, _ = build(3, counts, seed=11)
    rows = merger.emit(101 * RES)
    assert rows == [
        {"window_start": 6000, "window_end": 6060, "key": "a", "count": 21},
        {"window_start": 6000, "window_end": 6060, "key": "b", "count": 3},
        {"window_start": 6000, "window_end": 6060, "key": "c", "count": 13},
        {"window_start": 6000, "window_end": 6060, "key": "d", "count": 6},
    ]


def test_random_counts_match_a_plain_sum() -> None:
    rng = random.Random(5)
    workers = 4
    counts: list[dict[int, dict[Any, float]]] = [defaultdict(dict) for _ in range(workers)]
    expected: dict[tuple[int, Any], float] = defaultdict(float)
    for _ in range(400):
        w = rng.randrange(workers)
        period = 200 + rng.randrange(4)
        key = f"u{rng.randrange(12)}"
        counts[w][period][key] = counts[w][period].get(key, 0) + 1
        expected[(period, key)] += 1
    merger, _ = build(workers, [dict(c) for c in counts], seed=2)
    rows = merger.emit(1e12)
    got = {(int(r["window_start"] // RES), r["key"]): r["count"] for r in rows}
    assert got == dict(expected)
    assert merger.pending == {}


def test_only_periods_closed_at_the_watermark_are_emitted() -> None:
    counts = [{10: {"a": 1}, 11: {"a": 2}, 12: {"a": 4}}, {11: {"a": 8}, 12: {"b": 16}}]
    merger, _ = build(2, counts)
    assert merger.emit(10 * RES) == []  # period 10 ends at 660: still open at 600
    assert merger.emit(11 * RES - 0.001) == []
    rows = merger.emit(11 * RES)
    assert [(r["window_start"], r["key"], r["count"]) for r in rows] == [(600, "a", 1)]
    rows = merger.emit(12.5 * RES)
    assert [(r["window_start"], r["key"], r["count"]) for r in rows] == [(660, "a", 10)]
    assert sorted(merger.pending) == [12]
    rows = merger.emit(13 * RES)
    assert [(r["window_start"], r["key"], r["count"]) for r in rows] == [
        (720, "a", 4), (720, "b", 16)]
    assert merger.emit(100 * RES) == []  # each period is emitted once


def test_periods_oldest_first_and_keys_in_order() -> None:
    keys: list[Any] = ["u10", "u2", "b", "a", "u1"]
    counts = [{7: {k: 1 for k in keys}, 5: {k: 2 for k in keys[:3]}}]
    merger, _ = build(1, counts, seed=3)
    rows = merger.emit(8 * RES)
    assert [(r["window_start"], r["key"]) for r in rows] == (
        [(300, k) for k in sorted(keys[:3])] + [(420, k) for k in sorted(keys)])


def test_numeric_keys_in_numeric_order() -> None:
    keys = [10, 9, 100, 2, 1]
    merger, _ = build(2, [{0: {k: 1 for k in keys[:3]}}, {0: {k: 1 for k in keys[2:]}}])
    rows = merger.emit(RES)
    assert [r["key"] for r in rows] == [1, 2, 9, 10, 100]
    assert [r["count"] for r in rows] == [1, 1, 1, 1, 2]  # 100 is on both workers


def test_mixed_key_types_do_not_break_the_order() -> None:
    merger, _ = build(1, [{0: {"x": 1, 3: 2, ("a", 1): 3}}])
    rows = merger.emit(RES)
    assert sorted(r["count"] for r in rows) == [1, 2, 3]


def test_rows_of_zero_and_fractional_counts() -> None:
    merger = WindowMerger("A", 0.5, 2)
    a = np.zeros((3, 4))
    b = np.zeros((3, 4))
    a[1, 0], a[1, 1] = 0.25, 0.0  # a key with nothing in this period is left out
    b[1, 0] = 1.0
    merger.attach(0, a)
    merger.attach(1, b)
    merger.report(0, ["k", "empty"], [[4, 1]])
    merger.report(1, ["k"], [[4, 1]])
    assert merger.emit(2.5) == [{"window_start": 2, "window_end": 2.5, "key": "k",
                                 "count": 1.25}]


def test_msgpack_list_keys_become_tuples() -> None:
    assert hashable_key(["a", [1, 2]]) == ("a", (1, 2))
    merger = WindowMerger("A", RES, 1)
    array = np.zeros((2, 2))
    array[0, 0] = 3
    merger.attach(0, array)
    merger.report(0, [["geo", 1]], [[0, 0]])
    assert merger.emit(RES)[0]["key"] == ("geo", 1)


def test_a_reused_row_counts_for_its_new_key_from_the_report_on() -> None:
    merger = WindowMerger("A", RES, 1)
    array = np.zeros((SLOTS, 4))
    merger.attach(0, array)
    array[0, :3] = [1, 2, 3]
    merger.report(0, ["a", "b", "c"], [[100, 0]])
    first = merger.emit(101 * RES)
    # Row 1 ("b") has been read; the worker gives it to "d" and counts "d" there.
    array[1, 1] = 7
    array[1, 2] = 1
    merger.report(0, [], [[101, 1]], rows=[[1, "d"]])
    second = merger.emit(102 * RES)
    assert [(r["key"], r["count"]) for r in first] == [("a", 1), ("b", 2), ("c", 3)]
    assert [(r["key"], r["count"]) for r in second] == [("c", 1), ("d", 7)]
    assert merger.keys[0] == ["a", "d", "c"]


def test_a_grown_ring_is_mapped_by_name_and_the_old_name_removed() -> None:
    import os

    from cluster.shm import SHM_DIR, Segment, unlink_run

    run = f"{os.getpid()}.mergetest{os.urandom(2).hex()}"
    try:
        old = Segment.create(f"bspc-{run}-w0-r", (SLOTS, 2), np.float64)
        merger = WindowMerger("A", RES, 1)
        mapped = Segment.attach(old.name, (SLOTS, 2), "<f8")  # as at the worker's hello
        merger.attach(0, mapped.array, mapped)
        old.array[0, :2] = [1, 2]
        merger.report(0, ["a", "b"], [[100, 0]])
        new = Segment.create(f"bspc-{run}-w0-r.g1", (SLOTS, 4), np.float64)
        new.array[:, :2] = old.array
        new.array[1, 2] = 5
        merger.report(0, ["c"], [[101, 1]], segment=[new.name, [SLOTS, 4], "<f8"])
        rows = merger.emit(102 * RES)
        assert [(r["window_start"], r["key"], r["count"]) for r in rows] == [
            (6000, "a", 1), (6000, "b", 2), (6060, "c", 5)]
        assert not (SHM_DIR / old.name).exists()
        assert (SHM_DIR / new.name).exists()
    finally:
        unlink_run(run)
