"""Shared-memory segments: shared between real processes, private, cleaned up."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cluster.errors import SharedMemoryError
from cluster.shm import SHM_DIR, Segment, remove_stale, segment_name, unlink_run

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="needs /dev/shm")

SHAPE = (4, 5)


@pytest.fixture
def test_id() -> Iterator[str]:
    """A unique id to put in every name this test creates; removes them afterwards."""
    tid = f"t{uuid.uuid4().hex[:12]}"
    yield tid
    for path in SHM_DIR.glob(f"bspc-*{tid}*"):
        path.unlink(missing_ok=True)


def _expected() -> np.ndarray:
    return np.arange(SHAPE[0] * SHAPE[1], dtype=np.float64).reshape(SHAPE) * 1.5 - 3.0


def _child(name: str, to_parent: Any, go: Any) -> None:
    seg = Segment.create(name, SHAPE, "float64")
    seg.array[...] = np.arange(20, dtype=np.float64).reshape(SHAPE) * 1.5 - 3.0
    to_parent.put(os.getpid())
    if not go.wait(30):
        return
    # What the parent wrote into the same pages.
    to_parent.put(float(seg.array[3, 4]))


def test_segment_created_in_another_process_is_read_here(test_id: str) -> None:
    name = segment_name(f"{os.getpid()}.{test_id}", "w0", "shared")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    go = ctx.Event()
    child = ctx.Process(target=_child, args=(name, queue, go))
    child.start()
    try:
        child_pid = queue.get(timeout=30)
        assert child_pid != os.getpid()
        seg = Segment.attach(name, SHAPE, "float64")
        assert not seg.owner
        np.testing.assert_array_equal(seg.array, _expected())
        # Writes here are seen there: it is one mapping, not a copy.
        seg.array[3, 4] = -7.25
        go.set()
        assert queue.get(timeout=30) == -7.25
    finally:
        go.set()
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == 0
    # The segment outlives its creator until it is unlinked.
    again = Segment.attach(name, SHAPE, "float64")
    assert again.array[3, 4] == -7.25
    again.unlink()
    assert not (SHM_DIR / name).exists()


def test_segment_is_readable_by_the_owner_only(test_id: str) -> None:
    old_umask = os.umask(0)  # even with a permissive umask
    try:
        seg = Segment.create(segment_name(f"{os.getpid()}.{test_id}", "w0", "m"), (3,), "int64")
    finally:
        os.umask(old_umask)
    st = (SHM_DIR / seg.name).stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    assert st.st_size == 3 * 8
    assert seg.array.tolist() == [0, 0, 0]
    seg.unlink()


def test_create_refuses_an_existing_name_and_attach_checks_size(test_id: str) -> None:
    name = segment_name(f"{os.getpid()}.{test_id}", "w0", "x")
    seg = Segment.create(name, (2, 2), "float32")
    with pytest.raises(SharedMemoryError, match=re.escape(name)):
        Segment.create(name, (2, 2), "float32")
    with pytest.raises(SharedMemoryError, match="need 64"):
        Segment.attach(name, (4, 4), "float32")
    with pytest.raises(SharedMemoryError):
        Segment.attach(name + "-absent", (1,), "float32")
    with pytest.raises(SharedMemoryError):
        Segment.create(name + "-obj", (1,), object)
    assert not (SHM_DIR / (name + "-obj")).exists()
    seg.unlink()


def test_segment_names() -> None:
    assert segment_name("123.ab", "w0", "P.A.windows") == "bspc-123.ab-w0-P.A.windows"
    odd = segment_name("123.ab", "w1", "m.geo/matrix with space")
    assert odd.startswith("bspc-123.ab-")
    assert "/" not in odd and " " not in odd


def _make(name: str) -> Path:
    Segment.create(name, (1,), "uint8")
    return SHM_DIR / name


def test_unlink_run_removes_that_runs_segments_only(test_id: str) -> None:
    pid = os.getpid()
    run = f"{pid}.{test_id}"
    mine = [_make(segment_name(run, f"w{w}", "windows")) for w in range(3)]
    other_run = _make(segment_name(f"{pid}.{test_id}x", "w0", "windows"))
    assert unlink_run(run) == 3
    assert not any(p.exists() for p in mine)
    assert other_run.exists()
    assert unlink_run(run) == 0


def test_remove_stale_removes_dead_runs_and_keeps_live_ones(test_id: str) -> None:
    # A pid that surely belonged to a process which has exited.
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(done.stdout)
    try:
        os.kill(dead_pid, 0)
        pytest.skip("the pid was reused already")
    except ProcessLookupError:
        pass
    dead = [_make(segment_name(f"{dead_pid}.{test_id}", "w0", "a")),
            _make(segment_name(f"{dead_pid}.{test_id}", "w1", "a"))]
    live = _make(segment_name(f"{os.getpid()}.{test_id}", "w0", "a"))
    not_ours = _make(f"bspc-notapid{test_id}")
    removed = remove_stale()
    assert {p.name for p in dead} <= set(removed)
    assert not any(p.exists() for p in dead)
    assert live.exists()
    assert not_ours.exists()
    assert live.name not in removed
