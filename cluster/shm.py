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
from typing import Any

import numpy as np

from cluster.errors import ConfigError, SharedMemoryError

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


class SharedArrays:
    """A worker's arrays in shared memory: bspump's :class:`~bspump.arrays.ArrayAllocator`.

    The worker's runtime hands it to the Application, so matrices and window rings live
    in segments named ``bspc-<run id>-w<worker>-<logical name>`` that the coordinator
    maps from the worker's hello and reports.
    """

    def __init__(self, run_id: str, worker: int) -> None:
        self.run_id = run_id
        self.worker = worker
        self.segments: dict[str, Segment] = {}
        # Logical name -> how many times its array was replaced by a bigger one.
        self._generations: dict[str, int] = {}
        # Logical names whose current segment someone else has been told about.
        self._announced: set[str] = set()

    def _name(self, logical: str) -> str:
        return segment_name(self.run_id, f"w{self.worker}", logical)

    def allocate(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A zeroed array in a new segment."""
        if name in self.segments:
            raise ConfigError(f"two shared arrays named {name!r}")
        seg = Segment.create(self._name(name), shape, dtype)
        self.segments[name] = seg
        return seg.array

    def reallocate(self, name: str, old: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A new segment named with the next generation (``<name>.g1``, ``.g2``, ...).

        Names stay unique within the run. The old segment's name is removed here only
        if nobody was told about it (:meth:`segment_info`); otherwise the coordinator
        removes it once it has mapped the new one, because it may still have to map the
        old one from a report it has not read yet.
        """
        generation = self._generations.get(name, 0) + 1
        seg = Segment.create(self._name(f"{name}.g{generation}"), shape, old.dtype)
        seg.array[tuple(slice(0, n) for n in old.shape)] = old
        previous = self.segments[name]
        if name not in self._announced:
            previous.unlink()
        self._announced.discard(name)
        self._generations[name] = generation
        self.segments[name] = seg
        return seg.array

    def segment_info(self, name: str) -> list[object] | None:
        """[segment name, shape, dtype] of ``name``'s segment, now told to the coordinator."""
        seg = self.segments.get(name)
        if seg is None:
            return None
        self._announced.add(name)
        return [seg.name, list(seg.array.shape), seg.array.dtype.str]

    def shared_names(self) -> list[str]:
        """Every logical name with a segment."""
        return list(self.segments)


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
