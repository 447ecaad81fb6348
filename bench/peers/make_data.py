"""Write a workload's events as JSON lines with bspump-cluster's own generator.

    python make_data.py --out FILE --events N --generator '{"users": 10000, ...}'

``bspump.generator.GeneratorSource(...).events(start, stop)`` with the given
``[pipeline:P:GeneratorSource]`` keys (default seed), one ``json.dumps`` object per line,
in timestamp order; the same construction as bench/kafka.py. Written to a temporary name
and renamed, so a cut-short run never leaves a partial file under the final name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import bspump  # noqa: E402
from bspump.generator import GeneratorSource  # noqa: E402
from cluster.config import Config  # noqa: E402

CHUNK = 100_000


def write(out: Path, events: int, generator: dict[str, object]) -> int:
    """Write ``events`` generated events to ``out``; returns the file's size in bytes."""
    keys = "".join(f"{k} = {v}\n" for k, v in generator.items())
    cfg = Config.from_string(f"[pipeline:P:GeneratorSource]\n{keys}count = {events}\n")
    app = bspump.Application(cfg)
    gen = GeneratorSource(app, bspump.Pipeline(app, "P"))
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w") as f:
        for start in range(0, events, CHUNK):
            f.writelines(json.dumps(e) + "\n" for e in gen.events(start, min(events,
                                                                              start + CHUNK)))
    os.replace(tmp, out)
    return out.stat().st_size


def main() -> int:
    """Parse the arguments and write the file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--events", required=True, type=int)
    ap.add_argument("--generator", required=True, help="GeneratorSource keys as JSON")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    size = write(args.out, args.events, json.loads(args.generator))
    print(json.dumps({"events": args.events, "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
