"""Which worker owns a key: keys hash into key groups, key groups map onto workers.

A key's group is ``crc32(key bytes) mod key_groups``: stable across processes,
hosts and Python versions (Python's ``hash()`` is salted per process). Worker ``k``
of ``n`` owns the contiguous range of groups ``g`` with ``g * n // key_groups == k``,
so state stored per key group can be restored onto any number of workers. The
runtime's layout (:mod:`cluster.layout`) routes by these functions; analyzers use
them to store keyed state per key group and to take back the keys they own.
"""

from __future__ import annotations

import zlib
from typing import Any


def key_bytes(key: Any) -> bytes:
    """The canonical bytes of a key: the same value always gives the same bytes."""
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, int):
        # bool included: True == 1 in every dict a worker keeps, so it must route like 1.
        return str(int(key)).encode("ascii")
    if isinstance(key, float):
        return (str(int(key)) if key.is_integer() else repr(key)).encode("ascii")
    if isinstance(key, bytes):
        return key
    if isinstance(key, (list, tuple)):
        return b"\x1f".join(key_bytes(k) for k in key)
    return str(key).encode("utf-8", "surrogatepass")


def stable_hash(key: Any) -> int:
    """A 32-bit hash of the key that never changes between runs."""
    return zlib.crc32(key_bytes(key))


def key_group(key: Any, key_groups: int) -> int:
    """The key group of ``key``, of ``key_groups``."""
    return stable_hash(key) % key_groups


def worker_of_group(group: int, workers: int, key_groups: int) -> int:
    """The worker of ``workers`` that owns key group ``group`` of ``key_groups``."""
    return group * workers // key_groups


def worker_of(key: Any, workers: int, key_groups: int) -> int:
    """The worker of ``workers`` that owns ``key``."""
    return worker_of_group(stable_hash(key) % key_groups, workers, key_groups)
