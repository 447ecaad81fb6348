"""Which new worker takes which part of an old checkpoint on a restore with rescaling."""

from __future__ import annotations

import pytest

from bspump.processor import RestoreInfo


@pytest.mark.parametrize("old_workers", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5])
def test_each_old_workers_summable_state_is_added_by_exactly_one_new_worker(
        old_workers: int, workers: int) -> None:
    # Window counts are sums: an old worker's counts taken by no new worker are lost,
    # taken by two are counted twice. The README's rule: old worker i goes to i mod M.
    infos = [RestoreInfo(w, workers, old_workers, 64) for w in range(workers)]
    for old in range(old_workers):
        takers = [info.worker for info in infos if info.summable_from(old)]
        assert takers == [old % workers], (old, takers)
