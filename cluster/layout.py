"""Shard layout: keys hash into key groups, key groups map onto workers.

A key's group is ``crc32(key bytes) mod key_groups``: stable across processes,
hosts and Python versions (Python's ``hash()`` is salted per process). Worker ``k``
of ``n`` owns the contiguous range of groups ``g`` with ``g * n // key_groups == k``,
so a checkpoint stored per key group can be restored onto any number of workers.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster.config import ShardKeySpec
from cluster.errors import LayoutError, RecordError


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


@dataclass(frozen=True)
class Layout:
    """Which key groups each of ``workers`` workers owns."""

    workers: int
    key_groups: int

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise LayoutError(f"workers must be at least 1, got {self.workers}")
        if self.key_groups < self.workers:
            raise LayoutError(
                f"{self.workers} workers need at least as many key groups, got {self.key_groups}")

    def key_group(self, key: Any) -> int:
        """The key group of a key."""
        return stable_hash(key) % self.key_groups

    def worker_of_group(self, group: int) -> int:
        """The worker that owns a key group."""
        return group * self.workers // self.key_groups

    def worker_of(self, key: Any) -> int:
        """The worker that owns a key."""
        return self.worker_of_group(stable_hash(key) % self.key_groups)

    def groups_of(self, worker: int) -> range:
        """The key groups a worker owns, as a range."""
        start = -(-worker * self.key_groups // self.workers)
        stop = -(-(worker + 1) * self.key_groups // self.workers)
        return range(start, stop)

    def describe(self) -> str:
        """The layout as printed by ``bspump-cluster layout``."""
        lines = [f"{self.workers} workers, {self.key_groups} key groups "
                 "(key group = crc32(key) mod key_groups)"]
        for w in range(self.workers):
            r = self.groups_of(w)
            lines.append(f"worker {w}: key groups {r.start}-{r.stop - 1} ({len(r)} groups)")
        return "\n".join(lines)


KeyExtractor = Callable[[dict[str, Any]], Any]


def check_key(name: str, key: Any) -> Any:
    """A shard key value as found in field ``name``; RecordError when it cannot route."""
    if key is None or isinstance(key, (dict, list)):
        raise RecordError(f"shard key field {name!r} is {type(key).__name__}")
    return key


def geo_cell(spec: tuple[str, str, float], lat_value: Any, lon_value: Any) -> str:
    """The geo cell ``"row:col"`` of a position, cells of ``size`` degrees."""
    lat_field, lon_field, size = spec
    try:
        lat = float(lat_value)
        lon = float(lon_value)
    except (TypeError, ValueError, OverflowError):
        raise RecordError(
            f"shard key fields {lat_field!r}/{lon_field!r} are not numbers") from None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise RecordError(f"coordinates out of range: {lat}, {lon}")
    return f"{math.floor(lat / size)}:{math.floor(lon / size)}"


def key_extractor(spec: ShardKeySpec) -> KeyExtractor:
    """A function taking an event to its shard key; raises RecordError when absent."""
    if spec.geo is not None:
        geo = spec.geo
        lat_field, lon_field, _ = geo

        def geo_key(event: dict[str, Any]) -> Any:
            try:
                return geo_cell(geo, event[lat_field], event[lon_field])
            except KeyError as e:
                raise RecordError(f"missing shard key field {e.args[0]!r}") from None
            except TypeError:
                raise RecordError("record is not an object") from None

        return geo_key

    name = spec.field
    assert name is not None

    def field_key(event: dict[str, Any]) -> Any:
        try:
            key = event[name]
        except KeyError:
            raise RecordError(f"missing shard key field {name!r}") from None
        except TypeError:
            raise RecordError("record is not an object") from None
        return check_key(name, key)

    return field_key
