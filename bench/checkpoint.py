"""Checkpoint and restore time of one shard, and the cost of checkpointing a whole run.

    python bench/checkpoint.py [--repeat 3] [--write]

Part 1 writes one worker's state with the real code (``Pipeline.checkpoint`` into a
checkpoint folder: temp file, fsync, rename, crc32) and reads it back
(``Pipeline.restore``) for a Matrix of 10^6 and 10^7 float64 cells and for 10^5 open
sessions, median of ``--repeat``. Part 2 runs configs/bench.ini on 2 workers with
``checkpoint_interval = 1`` and with checkpoints off, interleaved, median of ``--repeat``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import machine, replace_section, run_once  # noqa: E402

import bspump  # noqa: E402
from bspump.analyzer import SessionAnalyzer  # noqa: E402
from bspump.application import ROLE_SHARD, RunInfo  # noqa: E402
from bspump.matrix import Matrix  # noqa: E402
from bspump.processor import RestoreInfo  # noqa: E402
from cluster import checkpoint, shm  # noqa: E402
from cluster.checkpoint import ShardReader, ShardWriter  # noqa: E402


class _Sessions(SessionAnalyzer):
    def evaluate(self, context: dict[str, Any], event: Any) -> None:
        s = self.get_session(event["user_id"])
        if s is None:
            s = self.create_session(event["user_id"], {"n": 0, "sum": 0.0})
        s["n"] += 1
        s["sum"] += event["value"]


class _StatePipeline(bspump.Pipeline):
    def __init__(self, app: bspump.Application, pipeline_id: str, cells: int) -> None:
        super().__init__(app, pipeline_id)
        self.build(bspump.generator.GeneratorSource(app, self), _Sessions(app, self),
                   bspump.common.NullSink(app, self))
        if cells:
            self.matrix = Matrix(app, "Big", (cells // 1000, 1000))


def _pipeline(run_id: str, cells: int) -> _StatePipeline:
    run = RunInfo(role=ROLE_SHARD, run_id=run_id, key_groups=256)
    p = _StatePipeline(bspump.Application(run=run, arrays=shm.SharedArrays(run_id, 0)),
                       "StateBench", cells)
    p.start(run)
    return p


def measure_shard(cells: int, sessions: int, repeat: int) -> tuple[float, float, float]:
    """Median checkpoint s, restore s, and MB written."""
    writes, reads, size = [], [], 0.0
    for i in range(repeat):
        run_id = f"bench{i}x{cells}x{sessions}"
        try:
            p = _pipeline(run_id + "a", cells)
            if cells:
                p.matrix.Array[...] = 1.5
            if sessions:
                events = [{"user_id": f"u{n}", "value": 1.0} for n in range(sessions)]
                p.process_batch([1767225600.0] * sessions, events)
            with tempfile.TemporaryDirectory() as d:
                folder = checkpoint.create_folder(Path(d), 1)
                t0 = time.perf_counter()
                writer = ShardWriter(folder, 0)
                p.checkpoint(writer)
                files = writer.close()
                writes.append(time.perf_counter() - t0)
                size = sum(f["size"] for f in files.values()) / 1e6
                q = _pipeline(run_id + "b", cells)
                t0 = time.perf_counter()
                q.restore([ShardReader(folder, 0)], RestoreInfo(0, 1, 1, 256))
                reads.append(time.perf_counter() - t0)
                assert len(q.Processors[0]._sessions) == sessions  # type: ignore[attr-defined]
        finally:
            for suffix in "ab":
                shm.unlink_run(run_id + suffix)
    return statistics.median(writes), statistics.median(reads), size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    rows = ["| shard state | written MB | checkpoint s (median) | restore s (median) |",
            "|---|---|---|---|"]
    for label, cells, sessions in (("Matrix 10^6 cells", 10**6, 0),
                                   ("Matrix 10^7 cells", 10**7, 0),
                                   ("10^5 open sessions", 0, 10**5)):
        w, r, mb = measure_shard(cells, sessions, args.repeat)
        rows.append(f"| {label} | {mb:.1f} | {w:.3f} | {r:.3f} |")
        print(rows[-1], file=sys.stderr)

    base = (ROOT / "configs" / "bench.ini").read_text()
    rates: dict[str, list[float]] = {"off": [], "1 s": []}
    with tempfile.TemporaryDirectory() as d:
        off = Path(d) / "off.ini"
        base = base.replace("[cluster]\n", f"[cluster]\npython_path = {ROOT / 'configs'}\n")
        off.write_text(base.replace("[cluster]\n", "[cluster]\ncheckpoint_dir = none\n"))
        on = Path(d) / "on.ini"
        on.write_text(base.replace("[cluster]\n", f"[cluster]\ncheckpoint_dir = {d}/cp\n"
                                   "checkpoint_interval = 1\n"))
        for _ in range(args.repeat):
            for name, cfg in (("off", off), ("1 s", on)):
                rate, _, _ = run_once(cfg, 2)
                rates[name].append(rate)
                print(f"checkpoints {name}: {rate:,.0f} events/s", file=sys.stderr)
    med_off, med_on = statistics.median(rates["off"]), statistics.median(rates["1 s"])
    rows += ["", "| configs/bench.ini, 2 workers | events/s (median) | runs |", "|---|---|---|"]
    for name in ("off", "1 s"):
        rows.append(f"| checkpoints {name} | {statistics.median(rates[name]):,.0f} | "
                    f"{', '.join(f'{r:,.0f}' for r in rates[name])} |")
    rows.append(f"\nSlowdown with a checkpoint every second: {1 - med_on / med_off:.1%} "
                f"({med_on / med_off:.2f}x the rate without).")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = "\n".join([f"{stamp}; {machine()}.",
                       f"Command: `python bench/checkpoint.py --repeat {args.repeat}`", "",
                       *rows])
    print(block)
    if args.write:
        replace_section("bench/checkpoint.py", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
