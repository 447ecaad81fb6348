"""Where a pipeline's numpy arrays live: the allocator the runtime plugs in, and the default.

Matrices and window rings ask the Application for their arrays by a logical name
(``m.<id>``, ``<pipeline>.<analyzer>.windows``). With no runtime plugged in they are
private numpy arrays, and the spec's examples run in one process; a worker's runtime
hands the Application an allocator that puts them in shared memory instead
(:class:`cluster.shm.SharedArrays`), so the coordinator can read them in place.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class ArrayAllocator(Protocol):
    """Gives out zeroed arrays by logical name and says where they live."""

    def allocate(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A zeroed array for ``name`` (each name is allocated once)."""

    def reallocate(self, name: str, old: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A zeroed array of ``shape`` in place of ``name``'s, ``old`` copied into its corner.

        ``shape`` is at least ``old.shape`` in every dimension (the caller checks).
        """

    def segment_info(self, name: str) -> list[object] | None:
        """[segment name, shape, dtype] of ``name``'s array, now told to the coordinator;
        None when it is not shared."""

    def shared_names(self) -> list[str]:
        """The logical names of every shared array."""


class PrivateArrays:
    """Arrays in this process's own memory: a local run, the coordinator, a test."""

    def allocate(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A zeroed numpy array."""
        return np.zeros(shape, dtype=dtype)

    def reallocate(self, name: str, old: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A bigger zeroed numpy array holding ``old`` in its corner."""
        array = np.zeros(shape, dtype=old.dtype)
        array[tuple(slice(0, n) for n in old.shape)] = old
        return array

    def segment_info(self, name: str) -> list[object] | None:
        """None: nothing here is shared."""
        return None

    def shared_names(self) -> list[str]:
        """None are shared."""
        return []
