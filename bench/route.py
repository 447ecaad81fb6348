"""The coordinator's routing alone: JSON lines in, per-worker wire messages out.

    python bench/route.py [--events 1000000] [--workers 2] [--repeat 5] [--write]

Runs the coordinator's own code path for a JSON-lines file, one core, no workers:
FileJSONLinesSource in raw mode (1 MiB reads, split into lines), Intake.feed_raw
(msgspec decodes only the shard key and the event time of a whole batch at once,
lateness, watermark chunks, a key -> worker cache), and the msgpack framing of every
per-worker message. Also the columnar path: the generator's numpy columns through
Intake.feed_columns and EventBatch framing. Median of ``--repeat``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from kafka import events as generated_lines  # noqa: E402
from run import machine, replace_section  # noqa: E402

import bspump  # noqa: E402
from bspump.application import RunInfo  # noqa: E402
from bspump.file import FileJSONLinesSource  # noqa: E402
from bspump.generator import GeneratorSource  # noqa: E402
from cluster import wire  # noqa: E402
from cluster.config import Config, PipelineSettings, ShardKeySpec  # noqa: E402
from cluster.intake import Intake  # noqa: E402
from cluster.layout import Layout  # noqa: E402

ROUTING = PipelineSettings("P", ShardKeySpec(field="user_id"), time_field="timestamp")


def route_file(path: Path, workers: int) -> int:
    """Read, route and frame a JSON-lines file; returns events routed."""
    cfg = Config.from_string(f"[pipeline:P:FileJSONLinesSource]\npath = {path}\n")
    app = bspump.Application(cfg, run=RunInfo(role="coordinator", run_id="route"))
    source = FileJSONLinesSource(app, bspump.Pipeline(app, "P"))
    source.want_raw = True
    intake = Intake(ROUTING, Layout(workers, 256), 60.0)

    async def go() -> int:
        n = 0
        async for batch in source.batches():
            assert batch.raw is not None
            result = intake.feed_raw(batch.raw, batch.where)
            for chunk in result.chunks:
                for w in range(workers):
                    lines = chunk.events[w]
                    for i in range(0, len(lines), 1000):
                        wire.pack(wire.DataRaw(chunk.times[w][i:i + 1000], lines[i:i + 1000]))
            n += result.accepted
        return n

    return asyncio.run(go())


def route_columns(events: int, workers: int) -> int:
    """Generate, route and frame numpy columns; returns events routed."""
    cfg = Config.from_string(f"[pipeline:P:GeneratorSource]\ncount = {events}\nbatch = 100000\n")
    app = bspump.Application(cfg)
    gen = GeneratorSource(app, bspump.Pipeline(app, "P"))
    intake = Intake(ROUTING, Layout(workers, 256), 60.0)
    n = 0
    for start in range(0, events, 100_000):
        result = intake.feed_columns(gen.column_batch(start, min(events, start + 100_000)))
        for chunk in result.chunks:
            for part in chunk.events:
                if len(part):
                    wire.pack(wire.DataCols(*part.to_wire()))
        n += result.accepted
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "events.jsonl"
        path.write_text("\n".join(generated_lines(args.events)) + "\n")
        for name, fn in (("JSON lines (raw path)", lambda: route_file(path, args.workers)),
                         ("generator columns (batch path)",
                          lambda: route_columns(args.events * 10, args.workers))):
            rates = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                n = fn()
                rates.append(n / (time.perf_counter() - t0))
            rows.append(f"| {name} | {n:,} | {statistics.median(rates):,.0f} | "
                        f"{', '.join(f'{r / 1e6:.2f} M' for r in rates)} |")
            print(rows[-1], file=sys.stderr)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = "\n".join([
        f"{stamp}; {machine()}; one core, {args.workers} workers' messages framed, not sent.",
        f"Command: `python bench/route.py --events {args.events} --workers {args.workers} "
        f"--repeat {args.repeat}`", "",
        "| input | events | events/s (median) | runs |", "|---|---|---|---|", *rows])
    print(block)
    if args.write:
        replace_section("bench/route.py", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
