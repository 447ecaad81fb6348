"""Events/s of a config through ``bspump-cluster run`` for several worker counts.

    python bench/run.py [--config configs/bench.ini] [--workers 1 2] [--repeat 3]

Each run is a fresh ``bspump-cluster run`` process; the rate is events read divided by
the coordinator's elapsed time (from its start to the last merged window), and the
wall time of the whole command (process starts included) is shown beside it. Prints a
Markdown table; ``--write`` replaces the table between the markers in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    """CPU model, cores and Python of this machine."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def replace_section(name: str, block: str) -> None:
    """Replace the text between ``<!-- NAME -->`` and ``<!-- NAME end -->`` in RESULTS.md."""
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text()
    marker, end_marker = f"<!-- {name} -->", f"<!-- {name} end -->"
    start, end = text.find(marker), text.find(end_marker)
    if start == -1 or end == -1:
        sys.exit(f"markers {marker} ... {end_marker} not found in {path}")
    path.write_text(text[: start + len(marker)] + "\n" + block + "\n" + text[end:])


def run_once(config: Path, workers: int) -> tuple[float, float, int]:
    """One run: (events/s by the coordinator's clock, wall seconds, events)."""
    with tempfile.TemporaryDirectory() as out:
        began = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "cluster", "run", str(config), "--workers",
                            str(workers), "-o", out], cwd=ROOT, capture_output=True, text=True,
                           check=False)
        wall = time.monotonic() - began
        if p.returncode != 0:
            sys.exit(f"run failed ({p.returncode}):\n{p.stderr}")
        s = json.loads((Path(out) / "summary.json").read_text())
    return s["records_read"] / s["elapsed_s"], wall, s["records_read"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/bench.ini")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    config = (ROOT / args.config).resolve()
    rates: dict[int, list[float]] = {w: [] for w in args.workers}
    walls: dict[int, list[float]] = {w: [] for w in args.workers}
    events = 0
    # Interleave worker counts so a noisy spell of the machine hits every count alike.
    for i in range(args.repeat):
        for w in args.workers:
            rate, wall, events = run_once(config, w)
            rates[w].append(rate)
            walls[w].append(wall)
            print(f"run {i + 1}/{args.repeat}, {w} workers: {rate:,.0f} events/s, "
                  f"{wall:.2f} s wall", file=sys.stderr)
    base = statistics.median(rates[args.workers[0]])
    rows = ["| workers | events/s (median) | runs (events/s) | wall s (median) | "
            f"vs {args.workers[0]} worker |", "|---|---|---|---|---|"]
    for w in args.workers:
        med = statistics.median(rates[w])
        rows.append(f"| {w} | {med:,.0f} | {', '.join(f'{r:,.0f}' for r in rates[w])} | "
                    f"{statistics.median(walls[w]):.2f} | {med / base:.2f}x |")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = f"python bench/run.py --config {args.config} --workers " \
              f"{' '.join(map(str, args.workers))} --repeat {args.repeat}"
    block = "\n".join([f"{events:,} events, {args.config}; {stamp}; {machine()}.",
                       f"Command: `{command}`", "", *rows])
    print(block)
    if args.write:
        replace_section(f"bench/run.py {args.config}", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
