"""Shared-memory numpy arrays in ``/dev/shm``, named per run, readable by the owner only.

A segment is a POSIX shared-memory object (on Linux a file in ``/dev/shm``) mapped
as a numpy array. Names start with ``bspc-<run id>-``; the run id starts with the
supervisor's pid, so a later run can tell a dead run's leftovers and remove them.
Pages are allocated on first touch: a large, mostly empty segment costs little.
"""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path

import numpy as np

from cluster.errors import SharedMemoryError

SHM_DIR = Path("/dev/shm")
PREFIX = "bspc-"
_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]+$")


def segment_name(run_id: str, *parts: object) -> str:
    """A segment name for this run: ``bspc-<run id>-<part>-<part>...``."""
    name = PREFIX + "-".join([run_id, *(str(p) for p in parts)])
    if not _NAME_OK.match(name) or len(name) > 250:
        name = PREFIX + run_id + "-" + re.sub(r"[^A-Za-z0-9_.\-]", "_", "-".join(
            str(p) for p in parts))[:200]
    return name


class Segment:
    """One mapped segment and the numpy array over it."""

    def __init__(self, name: str, array: np.ndarray, mm: mmap.mmap, owner: bool) -> None:
        self.name = name
        self.array = array
        self._mmap = mm
        self.owner = owner

    @classmethod
    def create(cls, name: str, shape: tuple[int, ...], dtype: np.dtype | str) -> Segment:
        """Create a zeroed segment; fails if the name exists."""
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise SharedMemoryError(f"dtype {dt} cannot live in shared memory")
        size = max(1, int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
        path = SHM_DIR / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise SharedMemoryError(f"cannot create shared memory {path}: {e}") from None
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        except OSError as e:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise SharedMemoryError(f"cannot size shared memory {path} to {size} bytes: {e}")\
                from None
        os.close(fd)
        array = np.ndarray(shape, dtype=dt, buffer=mm)
        return cls(name, array, mm, owner=True)

    @classmethod
    def attach(cls, name: str, shape: tuple[int, ...], dtype: np.dtype | str) -> Segment:
        """Map an existing segment created by another process."""
        dt = np.dtype(dtype)
        path = SHM_DIR / name
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as e:
            raise SharedMemoryError(f"cannot open shared memory {path}: {e}") from None
        try:
            size = os.fstat(fd).st_size
            need = max(1, int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
            if size < need:
                raise SharedMemoryError(f"shared memory {path} has {size} bytes, need {need}")
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        array = np.ndarray(shape, dtype=dt, buffer=mm)
        return cls(name, array, mm, owner=False)

    def unlink(self) -> None:
        """Remove the name; the mapping stays valid until closed."""
        (SHM_DIR / self.name).unlink(missing_ok=True)


def unlink_run(run_id: str) -> int:
    """Remove every segment of a run; returns how many were removed."""
    removed = 0
    for path in SHM_DIR.glob(f"{PREFIX}{run_id}-*"):
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Remove segments left by runs whose supervisor is no longer alive."""
    removed = []
    for path in SHM_DIR.glob(f"{PREFIX}*"):
        pid_text = path.name[len(PREFIX):].split("-", 1)[0].split(".", 1)[0]
        if not pid_text.isdigit():
            continue
        if not pid_alive(int(pid_text)):
            try:
                path.unlink()
                removed.append(path.name)
            except OSError:
                pass
    return removed
