"""Shard layout: which key groups each worker owns, and the shard key of an event.

The rule itself (a key's group is ``crc32(key bytes) mod key_groups``; worker ``k`` of
``n`` owns the groups ``g`` with ``g * n // key_groups == k``) is :mod:`bspump.keys`,
which analyzers use too; :class:`Layout` applies it for one number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bspump.keys import key_bytes, stable_hash, worker_of_group
from cluster.config import ShardKeySpec
from cluster.errors import LayoutError, RecordError

__all__ = ["KeyExtractor", "Layout", "check_key", "geo_cell", "key_bytes", "key_extractor",
           "stable_hash"]


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
        return worker_of_group(group, self.workers, self.key_groups)

    def worker_of(self, key: Any) -> int:
        """The worker that owns a key."""
        return worker_of_group(stable_hash(key) % self.key_groups, self.workers,
                               self.key_groups)

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
