"""What one task per Kafka partition costs, and how long a takeover pauses a partition.

    python bench/scaleout.py [--events 1000000] [--repeat 3] [--write]

Starts a real Apache Kafka 3.9 broker on 127.0.0.1, writes the events of
configs/bench.ini's generator to a 4-partition topic keyed by user_id, and runs
BenchPipeline (HourlyCountAnalyzer + UserSessionAnalyzer) over the whole topic:

- ``one``: ``tasks = one`` (one coordinator for all partitions), 2 workers;
- ``partition``: ``tasks = partition`` on one host, each task a coordinator and 1 worker;
- ``partition, in-process``: the same with each task in one process (``--in-process``);
- ``partition, 2 hosts``: two members on this machine sharing the partitions.

Rates are end to end: events / wall-clock seconds from start to exit of every host,
start-up and group joins included. Medians of ``--repeat`` runs, interleaved.

Then a join and a takeover: a second host joins a running one, and the time from the
first host stopping its tasks until every partition has resumed is measured; 5 s
later the first host is killed with SIGKILL, and the time from the kill until the
other has resumed all the partitions whose newest checkpoint the dead host wrote is
measured (Kafka's session timeout, 6 s here, is most of it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from kafka import events, produce  # noqa: E402
from run import machine, replace_section  # noqa: E402

from tests.kafka.broker import KafkaBroker  # noqa: E402

CONFIG = """
[cluster]
pipeline = example_pipelines:BenchPipeline
python_path = {configs}
key_groups = 256
workers = {workers}
tasks = {tasks}
output_dir = {out}
checkpoint_dir = {checkpoints}
progress = no

[pipeline:BenchPipeline]
shard_key = user_id
time_field = timestamp
allowed_lateness = {lateness}
source = bspump.kafka:KafkaSource

[connection:KafkaConnection]
bootstrap_servers = {bootstrap}

[pipeline:BenchPipeline:KafkaSource]
topic = bench
group_id = {group}
stop_at_end = yes
batch = 5000
session_timeout_ms = 6000
heartbeat_interval_ms = 1000

[pipeline:BenchPipeline:HourlyCountAnalyzer]
count_field = type
"""

SETUPS = [("one", 2, False, 1), ("partition", 1, False, 1), ("partition", 1, True, 1),
          ("partition", 1, True, 2)]


def _name(tasks: str, workers: int, in_process: bool, hosts: int) -> str:
    if tasks == "one":
        return f"one, {workers} workers"
    return "partition" + (", in-process" if in_process else "") + \
        (f", {hosts} hosts" if hosts > 1 else "")


def _config(d: Path, run: str, tasks: str, workers: int, bootstrap: str, n: int) -> Path:
    out = d / run
    cfg = d / f"{run}.ini"
    # tasks = one reads the partitions interleaved: lateness covers the whole input.
    lateness = n / 100 + 60 if tasks == "one" else 60
    cfg.write_text(CONFIG.format(configs=ROOT / "configs", workers=workers, tasks=tasks,
                                 out=out, checkpoints="none" if tasks == "one" else
                                 out / "checkpoints", lateness=lateness, bootstrap=bootstrap,
                                 group=f"g-{run}"))
    return cfg


def _start(cfg: Path, in_process: bool, stderr: object = subprocess.DEVNULL
           ) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "cluster", "run", str(cfg)]
    if in_process:
        argv.append("--in-process")
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                            text=True, start_new_session=True)


def _records(out: Path) -> int:
    """Events every task (or the one coordinator) read, from the summaries."""
    return sum(json.loads(p.read_text())["records_read"] for p in out.glob("**/summary.json"))


def run_once(d: Path, run: str, setup: tuple[str, int, bool, int], bootstrap: str,
             n: int) -> float:
    tasks, workers, in_process, hosts = setup
    cfg = _config(d, run, tasks, workers, bootstrap, n)
    began = time.monotonic()
    procs = [_start(cfg, in_process) for _ in range(hosts)]
    for p in procs:
        if p.wait() != 0:
            sys.exit(f"{run}: a host exited with {p.returncode}")
    wall = time.monotonic() - began
    read = _records(d / run)
    assert read == n, f"{run}: read {read} of {n} events"
    return n / wall


def takeover(d: Path, bootstrap: str, n: int) -> tuple[float, float, int]:
    """The pause of a join, and the seconds from killing a host to the other resuming."""
    cfg = _config(d, "takeover", "partition", 1, bootstrap, n)
    stamps: list[tuple[float, str]] = []
    b_stamps: list[tuple[float, str]] = []

    def follow(proc: subprocess.Popen[str], into: list[tuple[float, str]]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            into.append((time.monotonic(), line))

    a = _start(cfg, True, subprocess.PIPE)
    threading.Thread(target=follow, args=(a, stamps), daemon=True).start()
    time.sleep(2.0)
    b = _start(cfg, True, subprocess.PIPE)
    threading.Thread(target=follow, args=(b, b_stamps), daemon=True).start()
    time.sleep(5.0)
    # The join: from A stopping its tasks until every partition has resumed somewhere.
    stopped = [t for t, line in stamps if "rebalance: stopping the tasks" in line]
    if not stopped:
        sys.exit("takeover: host A never stopped its tasks for B's join")
    joined = [t for t, line in stamps + b_stamps
              if t > stopped[0] and "resumes from checkpoint" in line]
    if len(joined) < 4:
        sys.exit("takeover: not every partition resumed after B's join")
    join_pause = sorted(joined)[3] - stopped[0]
    stamps = b_stamps
    killed_at = time.monotonic()
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    a_member = f":{a.pid}"
    resumed = re.compile(r"partition (\S+) resumes from checkpoint \d+ written by \S+" +
                         re.escape(a_member))
    if b.wait(600) != 0:
        sys.exit(f"takeover: the surviving host exited with {b.returncode}")
    times = [t for t, line in stamps if t > killed_at and resumed.search(line)]
    if not times:
        sys.exit("takeover: the surviving host resumed nothing of the killed one")
    return join_pause, max(times) - killed_at, len(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    lines = events(args.events)
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, KafkaBroker() as broker:
        d = Path(tmp)
        broker.create_topic("bench", partitions=4)
        t0 = time.monotonic()
        asyncio.run(produce(broker.bootstrap, lines))
        print(f"produced {len(lines):,} events in {time.monotonic() - t0:.1f} s",
              file=sys.stderr)
        for i in range(args.repeat):
            for setup in SETUPS:
                name = _name(*setup)
                run = f"r{i}-{setup[0]}-{setup[2]:d}-{setup[3]}"
                rate = run_once(d, run, setup, broker.bootstrap, args.events)
                rates.setdefault(name, []).append(rate)
                print(f"run {i + 1}: {name}: {rate:,.0f} events/s", file=sys.stderr)
        join, pause, moved = takeover(d, broker.bootstrap, args.events)
        print(f"join: every partition resumed {join:.1f} s after the first host stopped its "
              f"tasks; takeover: {moved} partitions resumed {pause:.1f} s after the kill",
              file=sys.stderr)
    base = statistics.median(rates[_name(*SETUPS[0])])
    rows = ["| setup | events/s end to end (median) | runs | vs tasks = one |",
            "|---|---|---|---|"]
    for setup in SETUPS:
        name = _name(*setup)
        med = statistics.median(rates[name])
        rows.append(f"| {name} | {med:,.0f} | {', '.join(f'{r:,.0f}' for r in rates[name])} "
                    f"| {med / base:.2f}x |")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = "\n".join([
        f"{args.events:,} events in 4 partitions; {stamp}; {machine()}; Kafka 3.9 broker on "
        "the same machine.",
        f"Command: `python bench/scaleout.py --events {args.events} --repeat {args.repeat}`",
        "", *rows, "",
        f"Join: when the second host joined, every partition had resumed {join:.1f} s after "
        "the first host began stopping its tasks (final checkpoints, then new tasks that "
        "restore them).",
        "",
        f"Takeover: after SIGKILL of one of two hosts, the other had resumed, {pause:.1f} s "
        f"later, all {moved} partitions whose newest checkpoint the killed host had written "
        "(Kafka noticed the loss after session_timeout_ms = 6000; a partition handed over "
        "less than checkpoint_interval = 10 s before still resumes from the killed host's "
        "checkpoint)."])
    print(block)
    if args.write:
        replace_section("bench/scaleout.py", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
