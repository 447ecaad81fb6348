"""Per-shard state in a checkpoint: what a piece writes, reads back, and takes on restore.

Pieces keep their state through the two small interfaces below; the runtime hands
them its checkpoint files (:class:`cluster.checkpoint.ShardWriter` and ``ShardReader``
satisfy them), and a test may hand them anything with the same four methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bspump.keys import worker_of


class StateWriter(Protocol):
    """Where one worker's state goes in a checkpoint."""

    def put_array(self, name: str, array: np.ndarray) -> None:
        """Store an array under ``name``."""

    def put_object(self, name: str, obj: Any) -> None:
        """Store msgpack-serialisable data under ``name``."""


class StateReader(Protocol):
    """What one (old) worker stored in a checkpoint."""

    def get_object(self, name: str) -> Any:
        """Data stored with ``put_object``, or None."""

    def get_array(self, name: str) -> np.ndarray | None:
        """An array stored with ``put_array``, or None."""


@dataclass(frozen=True)
class RestoreInfo:
    """Which parts of an old checkpoint this worker takes on restore.

    Keyed state (sessions) follows its key to the worker that owns it now; summable
    state (window counts, matrices) of old worker ``i`` goes to worker ``i mod workers``;
    opaque analyzer state (``get_state``) of old worker ``i`` goes to worker ``i``.
    """

    worker: int
    workers: int
    old_workers: int
    key_groups: int

    def owns(self, key: Any) -> bool:
        """Whether this worker owns ``key`` with ``workers`` workers (:mod:`bspump.keys`)."""
        return worker_of(key, self.workers, self.key_groups) == self.worker

    def summable_from(self, old_worker: int) -> bool:
        """Whether this worker adds old worker ``old_worker``'s summable state."""
        return old_worker % self.workers == self.worker
