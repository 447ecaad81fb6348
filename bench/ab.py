"""Before and after: the same workload through two revisions of bspump-cluster, interleaved.

    python bench/ab.py --base REV [--events N] [--repeat K] [--workers 1,2]
    python bench/ab.py --after-extra "$(printf '[pipeline:BenchPipeline:TimeWindowAnalyzer]\n\
anomaly_history = 10')"

Checks REV out into a scratch worktree (bench/out/ab/base), then runs bench/compare's
W1 workload (its cached JSON-lines file, its config: checkpoints off, no progress line)
on the base and on this working tree, round by round and in alternating order, with
``PYTHONPATH`` pointing each run at its own tree (same Python, same packages). Prints
the median events/s of each revision per worker count and the ratio after/before, and
checks that both revisions wrote the same windows and sessions. Without ``--base`` both
sides are this tree, and ``--before-extra`` / ``--after-extra`` (config lines added to
each side's config) say what differs, e.g. a feature off and on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(BENCH / "peers")]
from compare import CLUSTER_CONFIG, W1, ensure_data  # noqa: E402
from run import machine  # noqa: E402

OUT = BENCH / "out" / "ab"


def checkout(rev: str) -> Path:
    """A worktree of ``rev`` (detached) in bench/out/ab/base, made anew."""
    tree = OUT / "base"
    if tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                       check=False, capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True,
                   capture_output=True)
    return tree


def run_once(tree: Path, data: Path, workers: int, out: Path, extra: str = "") -> float:
    """One run of the W1 config from ``tree``; events/s by the run's own clock."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    w = W1
    config = out / "ab.ini"
    config.write_text(CLUSTER_CONFIG.format(
        configs=tree / "configs", lateness=w.allowed_lateness, path=data,
        resolution=w.resolution, gap=w.session_gap, extra=w.cluster_extra + extra + "\n"))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    p = subprocess.run([sys.executable, "-m", "cluster", "run", str(config), "--workers",
                        str(workers), "-o", str(out / "results")], cwd=tree, env=env,
                       capture_output=True, text=True, timeout=900, check=False)
    if p.returncode != 0:
        sys.exit(f"bench/ab: run in {tree} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    s = json.loads((out / "results" / "summary.json").read_text())
    return float(s["records_read"]) / float(s["elapsed_s"])


def results_of(out: Path) -> tuple[list[str], list[str]]:
    """Window rows and session rows of a run, sorted (to compare the two revisions)."""
    res = out / "results"
    rows = []
    for kind in ("windows", "sessions"):
        lines: list[str] = []
        for f in sorted(res.glob(f"*.{kind}.jsonl")):
            lines += f.read_text().splitlines()
        rows.append(sorted(lines))
    return rows[0], rows[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="the revision to compare against (default: this tree)")
    ap.add_argument("--before-extra", default="", help="config lines for the 'before' runs")
    ap.add_argument("--after-extra", default="", help="config lines for the 'after' runs")
    ap.add_argument("--events", type=int, default=W1.events)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    data = ensure_data(W1, args.events, Path(sys.executable))
    base = checkout(args.base) if args.base else ROOT
    trees = {"before": base, "after": ROOT}
    extras = {"before": args.before_extra, "after": args.after_extra}
    counts = [int(x) for x in args.workers.split(",")]
    rates: dict[tuple[str, int], list[float]] = {}
    for r in range(args.repeat):
        for n in counts:
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for name in order:
                rate = run_once(trees[name], data, n, OUT / f"{name}-{n}w", extras[name])
                rates.setdefault((name, n), []).append(rate)
                print(f"round {r + 1}: {name:<6} {n} worker(s) {rate:>12,.0f} events/s",
                      file=sys.stderr)
            if results_of(OUT / f"before-{n}w") != results_of(OUT / f"after-{n}w"):
                sys.exit(f"bench/ab: the two revisions wrote different results on {n} workers")
    rev = subprocess.run(["git", "rev-parse", "--short", args.base or "HEAD"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()
    print(f"W1, {args.events:,} events, median of {args.repeat} interleaved rounds; "
          f"before = {rev} {args.before_extra!r}, after = {head} + working tree "
          f"{args.after_extra!r}; {machine()}")
    print("| workers | before (events/s) | after (events/s) | after / before |")
    print("|---|---|---|---|")
    for n in counts:
        b = statistics.median(rates[("before", n)])
        a = statistics.median(rates[("after", n)])
        print(f"| {n} | {b:,.0f} | {a:,.0f} | {a / b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
