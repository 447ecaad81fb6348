"""The hot paths measured with the candidate libraries, one core, median of 5.

    python bench/hotpaths.py [--write]

Decode (JSON lines to dicts; only the routing fields), key hashing, batch framing
(msgpack of dicts vs raw lines vs numpy columns) and routing (per event vs vectorized).
The numbers chose the libraries the runtime uses; see bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from run import machine, replace_section  # noqa: E402

N = 200_000


def _lines() -> list[bytes]:
    rng = np.random.default_rng(1)
    users = rng.integers(0, 10_000, N).tolist()
    types = rng.integers(0, 10, N).tolist()
    return [json.dumps({"user_id": f"u{u}", "type": f"type{k}", "timestamp": 1767225600.0 + i,
                        "value": 100.5, "latitude": 12.3456, "longitude": -45.6789}).encode()
            for i, (u, k) in enumerate(zip(users, types, strict=True))]


def rate(fn: Callable[[], Any], n: int = N, repeat: int = 5) -> float:
    """Median items per second of ``fn`` over ``n`` items."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    lines = _lines()
    rows: list[tuple[str, str, float]] = []

    def add(group: str, name: str, fn: Callable[[], Any], n: int = N) -> None:
        r = rate(fn, n)
        rows.append((group, name, r))
        print(f"{group:10} {name:55} {r / 1e6:8.2f} M/s", file=sys.stderr)

    # Decode: whole events
    add("decode", "json.loads per line", lambda: [json.loads(x) for x in lines])
    try:
        import orjson

        add("decode", "orjson.loads per line", lambda: [orjson.loads(x) for x in lines])
    except ImportError:
        pass
    dec_any = msgspec.json.Decoder()
    add("decode", "msgspec.json decode per line (dict)", lambda: [dec_any.decode(x) for x in lines])

    # Decode: only the routing fields
    route = msgspec.defstruct("Route", [("user_id", Any, None), ("timestamp", Any, None)])
    dec_one = msgspec.json.Decoder(route)
    add("routing", "msgspec typed (user_id, timestamp) per line",
        lambda: [dec_one.decode(x) for x in lines])
    dec_many = msgspec.json.Decoder(list[route])  # type: ignore[valid-type]
    add("routing", "msgspec typed, whole batch as one JSON array",
        lambda: dec_many.decode(b"[" + b",".join(lines) + b"]"))

    # Hashing keys to key groups
    keys = [f"u{i % 10_000}" for i in range(N)]
    add("hash", "zlib.crc32 per key", lambda: [zlib.crc32(k.encode()) % 256 for k in keys])
    try:
        import xxhash

        add("hash", "xxhash.xxh32_intdigest per key",
            lambda: [xxhash.xxh32_intdigest(k.encode()) % 256 for k in keys])
    except ImportError:
        pass
    cache: dict[str, int] = {}

    def cached() -> None:
        for k in keys:
            w = cache.get(k)
            if w is None:
                cache[k] = zlib.crc32(k.encode()) % 256
    add("hash", "dict cache in front of crc32 (10,000 keys)", cached)
    codes = np.random.default_rng(2).integers(0, 10_000, N)
    table = np.array([zlib.crc32(f"u{i}".encode()) % 256 for i in range(10_000)])
    add("hash", "numpy table lookup on key codes (vectorized)", lambda: table[codes])

    # Framing a batch of 1,000 events for the wire
    dicts = [json.loads(x) for x in lines[:1000]]
    raw = lines[:1000]
    add("framing", "msgpack.packb, 1,000 dicts", lambda: [msgpack.packb(dicts) for _ in range(200)],
        200_000)
    packed = msgpack.packb(dicts)
    add("framing", "msgpack.unpackb, 1,000 dicts",
        lambda: [msgpack.unpackb(packed) for _ in range(200)], 200_000)
    add("framing", "msgpack.packb, 1,000 raw lines",
        lambda: [msgpack.packb(raw) for _ in range(200)], 200_000)
    cols = np.random.default_rng(3).random((5, 1000))
    add("framing", "numpy columns tobytes, 1,000 x 5 float64",
        lambda: [[c.tobytes() for c in cols] for _ in range(200)], 200_000)

    # Routing by key to 2 workers
    def per_event() -> None:
        out: list[list[bytes]] = [[], []]
        for k, line in zip(keys, lines, strict=True):
            out[cache[k] & 1].append(line)
    add("route", "per event: dict lookup + list append", per_event)
    add("route", "vectorized: table lookup + argsort split",
        lambda: np.split(np.argsort(table[codes] & 1, kind="stable"), 2))

    rows_md = ["| path | candidate | items/s (median of 5) |", "|---|---|---|"]
    rows_md += [f"| {g} | {n} | {r / 1e6:.2f} M |" for g, n, r in rows]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = "\n".join([f"{stamp}; {machine()}; one core.",
                       "Command: `python bench/hotpaths.py`", "", *rows_md])
    print(block)
    if args.write:
        replace_section("bench/hotpaths.py", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
