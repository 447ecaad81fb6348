"""Shard layout: key groups partition onto workers; keys hash the same in every process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zlib

import pytest

from cluster.config import ShardKeySpec
from cluster.errors import LayoutError, RecordError
from cluster.layout import Layout, key_bytes, key_extractor, stable_hash

PAIRS = [(w, g) for g in (1, 2, 3, 7, 16, 63, 64, 100, 256, 257, 1000)
         for w in (1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64, 100, 256) if w <= g]


@pytest.mark.parametrize(("workers", "key_groups"), PAIRS)
def test_groups_of_partitions_every_group_once(workers: int, key_groups: int) -> None:
    layout = Layout(workers, key_groups)
    owner: dict[int, int] = {}
    for w in range(workers):
        r = layout.groups_of(w)
        assert r.step == 1
        assert len(r) >= 1, f"worker {w} owns no key group"
        for g in r:
            assert g not in owner, f"group {g} owned by {owner.get(g)} and {w}"
            owner[g] = w
            assert layout.worker_of_group(g) == w
    assert sorted(owner) == list(range(key_groups))
    # Ranges are contiguous, in worker order, and balanced to within one group.
    sizes = [len(layout.groups_of(w)) for w in range(workers)]
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == key_groups


def test_layout_refuses_impossible_shapes() -> None:
    with pytest.raises(LayoutError):
        Layout(0, 16)
    with pytest.raises(LayoutError):
        Layout(17, 16)


def test_key_group_is_crc32_of_the_key_bytes() -> None:
    layout = Layout(4, 256)
    for key in ["u1", "user-ä", "", "x" * 1000]:
        assert layout.key_group(key) == zlib.crc32(key.encode("utf-8")) % 256
        expected_worker = (zlib.crc32(key.encode("utf-8")) % 256) * 4 // 256
        assert layout.worker_of(key) == expected_worker
    assert layout.key_group(42) == zlib.crc32(b"42") % 256


def test_equal_keys_hash_alike() -> None:
    # Workers keep keys in dicts, where 1 == 1.0 == True: they must land on one worker.
    assert stable_hash(1) == stable_hash(1.0) == stable_hash(True)
    assert stable_hash(0) == stable_hash(0.0) == stable_hash(False)
    assert stable_hash(("a", 1)) == stable_hash(["a", 1])
    assert key_bytes(1.5) == b"1.5"
    assert stable_hash("1") == stable_hash(1)  # same text, by design of key_bytes


_CHILD = """
import json, sys
from cluster.layout import Layout
keys = json.loads(sys.argv[1])
layout = Layout(8, 1024)
print(json.dumps([[layout.key_group(k), layout.worker_of(k), hash(str(k))] for k in keys]))
"""


def test_key_groups_are_stable_across_hash_seeds() -> None:
    keys: list[object] = [f"user{i}" for i in range(200)] + list(range(50)) + [1.25, "ü"]
    runs = []
    for seed in ("1", "987654"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(keys)], env=env,
                             capture_output=True, text=True, check=True, timeout=60)
        runs.append(json.loads(out.stdout))
    groups = [[row[:2] for row in run] for run in runs]
    assert groups[0] == groups[1]
    # The seeds really differ: Python's own hash of the same strings changed.
    assert [row[2] for row in runs[0]] != [row[2] for row in runs[1]]
    # And both agree with crc32 computed here.
    for key, (group, worker) in zip(keys, groups[0], strict=True):
        raw = key if isinstance(key, str) else (
            str(int(key)) if float(key).is_integer() else repr(key))  # type: ignore[arg-type]
        expected = zlib.crc32(raw.encode("utf-8")) % 1024
        assert group == expected, key
        assert worker == expected * 8 // 1024


# -- key extractors ----------------------------------------------------------------------


def test_field_key_extractor() -> None:
    get = key_extractor(ShardKeySpec(field="user_id"))
    assert get({"user_id": "u1", "x": 2}) == "u1"
    assert get({"user_id": 7}) == 7
    with pytest.raises(RecordError, match="'user_id'"):
        get({"other": 1})
    with pytest.raises(RecordError, match="'user_id'"):
        get({"user_id": None})
    with pytest.raises(RecordError):
        get({"user_id": {"nested": 1}})
    with pytest.raises(RecordError, match="not an object"):
        get([1, 2, 3])  # type: ignore[arg-type]


@pytest.mark.parametrize(("lat", "lon", "size"), [
    (48.85, 2.35, 0.5), (-33.87, 151.21, 0.5), (0.0, 0.0, 1.0), (-0.1, -0.1, 0.5),
    (90.0, 180.0, 0.5), (-90.0, -180.0, 2.0), (12.3456, -98.7654, 0.25),
])
def test_geo_cell_key_extractor(lat: float, lon: float, size: float) -> None:
    get = key_extractor(ShardKeySpec(geo=("latitude", "longitude", size)))
    expected = f"{math.floor(lat / size)}:{math.floor(lon / size)}"
    assert get({"latitude": lat, "longitude": lon}) == expected
    # Numeric strings are read as numbers.
    assert get({"latitude": str(lat), "longitude": str(lon)}) == expected


def test_geo_cell_groups_nearby_points_and_separates_far_ones() -> None:
    get = key_extractor(ShardKeySpec(geo=("lat", "lon", 0.5)))
    assert get({"lat": 48.51, "lon": 2.01}) == get({"lat": 48.99, "lon": 2.49}) == "97:4"
    assert get({"lat": 48.49, "lon": 2.01}) == "96:4"
    assert get({"lat": -0.2, "lon": 0.2}) == "-1:0"


def test_geo_cell_key_extractor_refuses_bad_records() -> None:
    get = key_extractor(ShardKeySpec(geo=("latitude", "longitude", 0.5)))
    with pytest.raises(RecordError, match="'longitude'"):
        get({"latitude": 1.0})
    with pytest.raises(RecordError, match="'latitude'"):
        get({"longitude": 1.0})
    with pytest.raises(RecordError, match="not numbers"):
        get({"latitude": "north", "longitude": 1.0})
    with pytest.raises(RecordError, match="not numbers"):
        get({"latitude": None, "longitude": 1.0})
    with pytest.raises(RecordError, match="out of range"):
        get({"latitude": 91.0, "longitude": 1.0})
    with pytest.raises(RecordError, match="out of range"):
        get({"latitude": float("nan"), "longitude": 1.0})
    # A JSON integer too large for a float is a bad record, not a crash.
    with pytest.raises(RecordError):
        get({"latitude": 10 ** 400, "longitude": 1.0})
