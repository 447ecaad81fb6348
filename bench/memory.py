"""Worker memory: RSS with 10^6 open sessions and with a 10^7-cell Matrix.

    python bench/memory.py [--sessions 1000000] [--cells 10000000] [--write]

Each case runs in a fresh interpreter that builds a worker's pipeline in the shard role
(matrices in shared memory) and reads its VmRSS from /proc before and after. The bytes
an open session costs beyond its data = (RSS with N sessions - RSS with the same N data
dicts kept in a plain list) / N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from run import machine, replace_section  # noqa: E402

CHILD = r'''
import json, os, sys
sys.path.insert(0, {root!r})
import bspump
from bspump.analyzer import SessionAnalyzer
from bspump.application import RunInfo
from bspump.matrix import Matrix
from cluster import shm

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

class Sessions(SessionAnalyzer):
    def evaluate(self, context, event):
        s = self.get_session(event["user_id"])
        if s is None:
            s = self.create_session(event["user_id"], {{"n": 0, "sum": 0.0}})
        s["n"] += 1
        s["sum"] += event["value"]

class P(bspump.Pipeline):
    def __init__(self, app, pid, cells):
        super().__init__(app, pid)
        self.build(bspump.generator.GeneratorSource(app, self), Sessions(app, self),
                   bspump.common.NullSink(app, self))
        if cells:
            self.m = Matrix(app, "Big", (cells // 1000, 1000))

case, n = sys.argv[1], int(sys.argv[2])
run = RunInfo(role="shard", run_id=f"mem{{os.getpid()}}")
arrays = shm.SharedArrays(run.run_id, 0)  # a worker's arrays, as its runtime gives them
try:
    events = [{{"user_id": f"u{{i}}", "value": 1.0}} for i in range(n if case != "matrix" else 0)]
    base = rss()
    if case == "data":
        keep = [{{"n": 1, "sum": 1.0}} for _ in events]
    elif case == "sessions":
        p = P(bspump.Application(run=run, arrays=arrays), "M", 0); p.start(run)
        for i in range(0, n, 10000):
            p.process_batch([1767225600.0] * len(events[i:i + 10000]), events[i:i + 10000])
        assert p.Processors[0].open_sessions == n
    else:
        p = P(bspump.Application(run=run, arrays=arrays), "M", n); p.start(run)
        p.m.Array[...] = 1.0
    print(json.dumps({{"case": case, "n": n, "rss_delta": rss() - base, "rss": rss()}}))
finally:
    shm.unlink_run(run.run_id)
'''


def measure(case: str, n: int) -> dict[str, int]:
    """Run one case in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), case, str(n)],
                         capture_output=True, text=True, check=True)
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--cells", type=int, default=10_000_000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    data = measure("data", args.sessions)
    sessions = measure("sessions", args.sessions)
    matrix = measure("matrix", args.cells)
    n = args.sessions
    per_session = sessions["rss_delta"] / n
    overhead = (sessions["rss_delta"] - data["rss_delta"]) / n
    rows = ["| worker state | RSS growth | per item |", "|---|---|---|",
            f"| {n:,} open sessions (data: a 2-key dict each) | "
            f"{sessions['rss_delta'] / 1e6:,.1f} MB | {per_session:,.0f} bytes per session |",
            f"| the same {n:,} data dicts in a plain list | {data['rss_delta'] / 1e6:,.1f} MB | "
            f"{data['rss_delta'] / n:,.0f} bytes |",
            f"| a Matrix of {args.cells:,} float64 cells, every cell written | "
            f"{matrix['rss_delta'] / 1e6:,.1f} MB | {matrix['rss_delta'] / args.cells:.1f} "
            "bytes per cell |"]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = "\n".join([f"{stamp}; {machine()}.",
                       f"Command: `python bench/memory.py --sessions {n} --cells {args.cells}`",
                       "", *rows, "",
                       f"An open session costs {overhead:,.0f} bytes beyond its data (its key, "
                       "the session record with first/last time and count, and its place "
                       "in the dict of sessions kept in last-use order)."])
    print(block)
    if args.write:
        replace_section("bench/memory.py", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
