"""bspump-cluster next to the systems its users would otherwise use, on the same events.

    bench/compare [--workload W1] [--events N] [--repeat K] [--only NAME,...] [--write]

Generates the workload's events once with bspump-cluster's own generator (cached in
bench/data/), sets up every system in a venv of its own (cached in bench/.venvs/), runs
each system ``--repeat`` times, interleaved round by round so a noisy spell of the
machine hits all of them alike, checks every run's windows and sessions against the
plain Python loop and prints events/s (median) per system and the ratio of
bspump-cluster on 2 workers to each. ``--write`` puts the table into bench/RESULTS.md
between ``<!-- bench/compare -->`` and ``<!-- bench/compare end -->``. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
VENVS = BENCH / ".venvs"
DATA = BENCH / "data"
OUT = BENCH / "out" / "compare"

sys.path.insert(0, str(BENCH))
from run import machine, replace_section  # noqa: E402

# -- workloads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One input and the analysis every system runs on it.

    ``generator`` holds the ``[pipeline:P:GeneratorSource]`` keys of bspump-cluster's
    generator (default seed) that make the data file; the other fields configure every
    system alike: window resolution (per-type counts per period), session gap (per-user
    sessions), bspump-cluster's ``allowed_lateness`` and extra config lines, and the
    peers' event-time slack (Bytewax's ``wait_for_system_duration``).
    """

    name: str
    title: str
    generator: dict[str, Any]
    events: int = 1_000_000
    resolution: float = 60.0
    session_gap: float = 1800.0
    allowed_lateness: float = 0.0
    cluster_extra: str = ""
    bytewax_wait: float = 60.0

    def data_file(self, events: int) -> Path:
        """Where this workload's events are cached: ``w1.jsonl`` (default size) or ``w1-N``."""
        stem = self.name.lower()
        return DATA / (f"{stem}.jsonl" if events == self.events else f"{stem}-{events}.jsonl")


W1 = Workload(
    name="W1",
    title="10,000 users, 10 types, 100 events/s of event time, in timestamp order; "
          "per-type counts per 60 s window and per-user sessions (gap 1800 s)",
    generator={"users": 10_000, "types": 10, "events_per_second": 100},
)

# Hook for W2: define it like W1 and add it here; `--workload W2` then runs every system
# on it. The peers read resolution, session gap and slack from the Workload; an analysis
# other than "per-type windows + per-user sessions" needs the peers (bench/peers/*_peer.py)
# and check() extended as well.
WORKLOADS: dict[str, Workload] = {w.name: w for w in (W1,)}


# -- running things -------------------------------------------------------------------------


class SetupError(Exception):
    """A system could not be set up; it is skipped."""


class RunError(Exception):
    """A run failed; the comparison goes on without it."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """End the process groups this script started (and only those), TERM then KILL."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def execute(cmds: list[list[str]], log: Path, *, cwd: Path, env: dict[str, str] | None = None,
            timeout: float) -> float:
    """Run the commands side by side (each in a session of its own); return wall seconds.

    Output goes to ``log``. If one fails or the timeout passes, the others are stopped and
    :class:`RunError` says which, with the end of the log.
    """
    full_env = {**os.environ, **(env or {})}
    began = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    with open(log, "wb") as out:
        try:
            for cmd in cmds:
                procs.append(subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=out,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              start_new_session=True))
            while True:
                codes = [p.poll() for p in procs]
                failed = [(p, c) for p, c in zip(procs, codes, strict=True) if c not in (None, 0)]
                if failed:
                    p, code = failed[0]
                    raise RunError(f"{shlex.join(p.args)} exited {code}:\n{_tail(log)}")
                if all(c == 0 for c in codes):
                    return time.monotonic() - began
                if time.monotonic() - began > timeout:
                    raise RunError(f"timed out after {timeout:.0f} s: {shlex.join(cmds[0])}\n"
                                   f"{_tail(log)}")
                time.sleep(0.02)
        finally:
            _stop(procs)


def _sha(*parts: str | Path) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.read_bytes() if isinstance(part, Path) else part.encode())
    return h.hexdigest()[:16]


def python_version(python: str | Path) -> str:
    """``3.11.7`` of an interpreter."""
    try:
        p = subprocess.run([str(python), "-c", "import sys; print(sys.version.split()[0])"],
                           capture_output=True, text=True, check=False)
    except OSError as e:
        raise SetupError(f"{python} does not run: {e}") from None
    if p.returncode != 0:
        raise SetupError(f"{python} does not run: {p.stderr.strip()}")
    return p.stdout.strip()


def ensure_venv(name: str, base: str | Path, steps: list[list[str]],
                inputs: list[Path]) -> Path:
    """``bench/.venvs/<name>`` made with ``base`` and the pip ``steps``; reused while its
    stamp (base Python, steps, contents of ``inputs``) is unchanged. Returns its python."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-stamp"
    want = _sha(python_version(base), json.dumps(steps), *inputs)
    if stamp.exists() and stamp.read_text() == want and python.exists():
        return python
    print(f"setting up {venv.relative_to(ROOT)} (once) ...", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    VENVS.mkdir(parents=True, exist_ok=True)
    log = VENVS / f"{name}.log"
    with open(log, "w") as out:
        made = subprocess.run([str(base), "-m", "venv", str(venv)], stdout=out,
                              stderr=subprocess.STDOUT, check=False)
        if made.returncode != 0:
            raise SetupError(f"{base} -m venv failed (see {log}):\n{_tail(log)}")
        for step in steps:
            cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *step]
            out.write(f"$ {shlex.join(cmd)}\n")
            out.flush()
            p = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=VENVS,
                               check=False)
            if p.returncode != 0:
                raise SetupError(f"pip install {shlex.join(step)} failed (see {log}):\n"
                                 f"{_tail(log)}")
    stamp.write_text(want)
    return python


def find_python37() -> str:
    """A Python 3.7 for BSPump 21.11: $BENCH_PYTHON37, pyenv's newest 3.7.x, or python3.7."""
    if os.environ.get("BENCH_PYTHON37"):
        return os.environ["BENCH_PYTHON37"]
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    try:
        roots.insert(0, subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                                       check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    for root in filter(None, roots):
        found = sorted(Path(root, "versions").glob("3.7.*/bin/python3.7"),
                       key=lambda p: [int(x) for x in p.parent.parent.name.split(".")
                                      if x.isdigit()])
        if found:
            return str(found[-1])
    which = shutil.which("python3.7")
    if which and subprocess.run([which, "-c", "1"], capture_output=True,
                                check=False).returncode == 0:
        return which
    raise SetupError("no Python 3.7 found (BSPump 21.11 installs on nothing newer): "
                     "`pyenv install 3.7.16`, or set BENCH_PYTHON37 to one")


def probe(python: Path, code: str) -> str:
    """What ``code`` prints under ``python`` (run outside the repo, so that ``import
    bspump`` finds the installed package, not this repo's)."""
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=d,
                           check=False)
    if p.returncode != 0:
        raise SetupError(f"{python} -c {code!r} failed:\n{p.stderr.strip()}")
    return p.stdout.strip()


# -- the systems ----------------------------------------------------------------------------


@dataclass
class Result:
    """One run of one system."""

    records: int
    elapsed: float
    wall: float
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Events per second by the system's own clock."""
        return self.records / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class Context:
    """What every run needs: the workload, its data file, the Pythons set up."""

    workload: Workload
    events: int
    data: Path
    pythons: dict[str, Path]
    timeout: float


@dataclass(frozen=True)
class System:
    """A system as a row of the table."""

    name: str  # for --only
    label: str
    setup: str  # key of Context.pythons it needs
    run: Callable[[Context, Path], Result]
    windows: str  # glob of its window rows in its output folder
    sessions: str  # glob of its session rows


def _summary(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "summary.json").read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"no summary.json in {out}: {e}") from None


CLUSTER_CONFIG = """\
# Written by bench/compare: configs/bench.ini's BenchPipeline reading the workload's file.
[cluster]
pipeline = example_pipelines:BenchPipeline
python_path = {configs}
key_groups = 256
checkpoint_dir = none
progress = no

[pipeline:BenchPipeline]
shard_key = user_id
time_field = timestamp
allowed_lateness = {lateness}
source = bspump.file:FileJSONLinesSource

[pipeline:BenchPipeline:FileJSONLinesSource]
path = {path}
batch = 5000

[pipeline:BenchPipeline:HourlyCountAnalyzer]
count_field = type
resolution = {resolution}

[pipeline:BenchPipeline:UserSessionAnalyzer]
session_timeout = {gap}
{extra}"""


def run_cluster(workers: int) -> Callable[[Context, Path], Result]:
    """``python -m cluster run CONFIG --workers N -o OUT`` (rate: summary.json, as run.py)."""

    def run(ctx: Context, out: Path) -> Result:
        w = ctx.workload
        config = out / "compare.ini"
        config.write_text(CLUSTER_CONFIG.format(
            configs=ROOT / "configs", lateness=w.allowed_lateness, path=ctx.data,
            resolution=w.resolution, gap=w.session_gap, extra=w.cluster_extra))
        results = out / "results"
        wall = execute([[str(ctx.pythons["cluster"]), "-m", "cluster", "run", str(config),
                         "--workers", str(workers), "-o", str(results)]],
                       out / "log.txt", cwd=ROOT, timeout=ctx.timeout)
        s = _summary(results)
        notes = [f"{s[k]:,} {k.replace('_', ' ')}" for k in ("late_events", "dead_letters")
                 if s.get(k)]
        return Result(int(s["records_read"]), float(s["elapsed_s"]), wall, notes)

    return run


def _peer_args(ctx: Context, out: Path) -> list[str]:
    return ["--input", str(ctx.data), "--out", str(out / "results"),
            "--resolution", str(ctx.workload.resolution),
            "--session-gap", str(ctx.workload.session_gap)]


def run_bspump(ctx: Context, out: Path) -> Result:
    """bench/peers/bspump_peer.py on BSPump 21.11 (Python 3.7)."""
    wall = execute([[str(ctx.pythons["bspump"]), str(PEERS / "bspump_peer.py"),
                     *_peer_args(ctx, out)]], out / "log.txt", cwd=out, timeout=ctx.timeout)
    s = _summary(out / "results")
    return Result(int(s["records_read"]), float(s["elapsed_s"]), wall)


def run_plain(ctx: Context, out: Path) -> Result:
    """bench/peers/plain_peer.py under this script's Python."""
    wall = execute([[sys.executable, str(PEERS / "plain_peer.py"), *_peer_args(ctx, out)]],
                   out / "log.txt", cwd=out, timeout=ctx.timeout)
    s = _summary(out / "results")
    return Result(int(s["records_read"]), float(s["elapsed_s"]), wall)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_bytewax(processes: int) -> Callable[[Context, Path], Result]:
    """bench/peers/bytewax_peer.py with ``bytewax.run``; with several processes, one
    ``bytewax.run -i K -a ADDRESSES`` each (what ``bytewax.testing -p N`` starts, but on
    free ports rather than its fixed 2101...)."""

    def run(ctx: Context, out: Path) -> Result:
        results = out / "results"
        env = {"PYTHONPATH": str(PEERS), "BENCH_INPUT": str(ctx.data),
               "BENCH_OUT": str(results), "BENCH_RESOLUTION": str(ctx.workload.resolution),
               "BENCH_SESSION_GAP": str(ctx.workload.session_gap),
               "BENCH_WAIT": str(ctx.workload.bytewax_wait)}
        base = [str(ctx.pythons["bytewax"]), "-m", "bytewax.run", "bytewax_peer:flow"]
        if processes == 1:
            cmds = [base]
        else:
            addresses = ";".join(f"127.0.0.1:{p}" for p in _free_ports(processes))
            cmds = [[*base, "-i", str(i), "-a", addresses] for i in range(processes)]
        wall = execute(cmds, out / "log.txt", cwd=out, env=env, timeout=ctx.timeout)
        timings = [json.loads(p.read_text()) for p in results.glob("timing.w*.json")]
        if not timings:
            raise RunError(f"no timing files in {results}")
        parsed: dict[str, int] = {}
        for p in results.glob("timing.w*.json"):
            worker = p.name.split(".")[1]
            parsed[worker] = max(parsed.get(worker, 0), json.loads(p.read_text())["parsed"])
        elapsed = max(t["end"] for t in timings) - min(t["start"] for t in timings)
        late = len(_rows(results, "late.w*.jsonl"))
        return Result(sum(parsed.values()), elapsed, wall,
                      [f"{late:,} late events (dropped)"] if late else [])

    return run


SYSTEMS = [
    System("cluster-1w", "bspump-cluster, 1 worker", "cluster", run_cluster(1),
           "*.HourlyCountAnalyzer.windows.jsonl", "*.UserSessionAnalyzer.sessions.jsonl"),
    System("cluster-2w", "bspump-cluster, 2 workers", "cluster", run_cluster(2),
           "*.HourlyCountAnalyzer.windows.jsonl", "*.UserSessionAnalyzer.sessions.jsonl"),
    System("bspump-21.11", "BSPump 21.11 (Python 3.7)", "bspump", run_bspump,
           "windows.jsonl", "sessions.jsonl"),
    System("bytewax-1p", "Bytewax 0.21.1, 1 process", "bytewax", run_bytewax(1),
           "windows.w*.jsonl", "sessions.w*.jsonl"),
    System("bytewax-2p", "Bytewax 0.21.1, 2 processes", "bytewax", run_bytewax(2),
           "windows.w*.jsonl", "sessions.w*.jsonl"),
    System("plain", "plain Python loop, 1 process", "plain", run_plain,
           "windows.jsonl", "sessions.jsonl"),
]
BY_NAME = {s.name: s for s in SYSTEMS}
GROUPS = {"cluster": ["cluster-1w", "cluster-2w"], "bytewax": ["bytewax-1p", "bytewax-2p"],
          "bspump": ["bspump-21.11"]}
HEADLINE = "cluster-2w"


def setup(group: str) -> tuple[Path, str]:
    """The Python for a group of systems, set up once; and what it is, for the table."""
    if group == "plain":
        return Path(sys.executable), f"Python {python_version(sys.executable)}"
    if group == "cluster":
        py = ensure_venv("cluster", sys.executable, [["-q", "-e", str(ROOT)]],
                         [ROOT / "pyproject.toml"])
        return py, f"Python {python_version(py)}"
    if group == "bytewax":
        req = PEERS / "bytewax-0.21.1-requirements.txt"
        py = ensure_venv("bytewax-0.21.1", sys.executable, [["-q", "-r", str(req)]], [req])
        return py, probe(py, "import importlib.metadata as m, sys; "
                             "print('Bytewax', m.version('bytewax'), 'on Python', "
                             "sys.version.split()[0])")
    if group == "bspump":
        req = PEERS / "bspump-21.11-py37-requirements.txt"
        py = ensure_venv("bspump-21.11-py37", find_python37(),
                         [["-q", "-r", str(req)], ["-q", "--no-deps", "bspump==21.11"]], [req])
        return py, probe(py, "import bspump, sys; "
                             "print('BSPump', bspump.__version__, 'on Python', "
                             "sys.version.split()[0])")
    raise ValueError(group)


def ensure_data(workload: Workload, events: int, python: Path) -> Path:
    """The workload's events as JSON lines, generated once and reused while unchanged."""
    path = workload.data_file(events)
    meta_path = path.with_name(path.name + ".meta.json")
    meta = {"workload": workload.name, "events": events, "generator": workload.generator,
            "generator_source": _sha(ROOT / "bspump" / "generator.py")}
    try:
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in meta} == meta and path.stat().st_size == old["bytes"]:
            return path
    except (OSError, ValueError, KeyError):
        pass
    print(f"generating {events:,} events of {workload.name} into {path.relative_to(ROOT)} ...",
          file=sys.stderr)
    p = subprocess.run([str(python), str(PEERS / "make_data.py"), "--out", str(path),
                        "--events", str(events), "--generator", json.dumps(workload.generator)],
                       capture_output=True, text=True, cwd=ROOT, check=False)
    if p.returncode != 0:
        sys.exit(f"bench/compare: generating the data failed:\n{p.stderr}")
    meta["bytes"] = json.loads(p.stdout)["bytes"]
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return path


CODE = ["bspump", "cluster", "coordinator", "workers", "configs", "pyproject.toml"]


def revision() -> tuple[str, str]:
    """bspump-cluster's commit (``+changes`` when its code differs from it), and a
    fingerprint of the code's contents, to tell whether it changed during the comparison."""
    files = sorted(p for name in CODE for p in ([ROOT / name] if (ROOT / name).is_file() else
                                                (ROOT / name).rglob("*"))
                   if p.is_file() and "__pycache__" not in p.parts)
    fingerprint = _sha(*(str(p.relative_to(ROOT)) for p in files), *files)
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *CODE], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit", fingerprint
    return head + ("+changes" if dirty else ""), fingerprint


# -- checking -------------------------------------------------------------------------------


Windows = dict[tuple[float, str], int]
Sessions = Counter[tuple[str, float, float, int]]


def _rows(folder: Path, pattern: str) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(folder.glob(pattern)):
        with open(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def load(system: System, folder: Path) -> tuple[Windows, Sessions]:
    """A run's window counts and sessions, normalised (times to 1 µs, counts to int)."""
    windows: Windows = {}
    for r in _rows(folder, system.windows):
        key = (round(float(r["window_start"]), 6), str(r["key"]))
        windows[key] = windows.get(key, 0) + round(float(r["count"]))
    sessions: Sessions = Counter(
        (str(r["key"]), round(float(r["start"]), 6), round(float(r["end"]), 6), int(r["events"]))
        for r in _rows(folder, system.sessions))
    return windows, sessions


def _examples(items: list[Any], n: int = 2) -> str:
    return ", ".join(repr(x) for x in items[:n]) + (", ..." if len(items) > n else "")


def check(ref: tuple[Windows, Sessions], got: tuple[Windows, Sessions]) -> list[str]:
    """How a run's results differ from the plain loop's; empty when they are the same."""
    problems = []
    rw, gw = ref[0], got[0]
    missing = sorted(set(rw) - set(gw))
    extra = sorted(set(gw) - set(rw))
    other = sorted(k for k in set(rw) & set(gw) if rw[k] != gw[k])
    if missing or extra or other:
        parts = [f"{len(missing)} missing", f"{len(extra)} extra",
                 f"{len(other)} with another count"]
        eg = ([f"missing {k}={rw[k]}" for k in missing[:1]]
              + [f"extra {k}={gw[k]}" for k in extra[:1]]
              + [f"{k}: {gw[k]} not {rw[k]}" for k in other[:1]])
        problems.append(f"windows: {len(missing) + len(extra) + len(other):,} of {len(rw):,} "
                        f"rows differ ({', '.join(parts)}; e.g. {'; '.join(eg)})")
    rs, gs = ref[1], got[1]
    lost, more = rs - gs, gs - rs
    if lost or more:
        problems.append(f"sessions: {lost.total() + more.total():,} of {rs.total():,} rows "
                        f"differ ({lost.total():,} missing, {more.total():,} extra; e.g. "
                        f"missing {_examples(sorted(lost))}; extra {_examples(sorted(more))})")
    return problems


# -- the table ------------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def table(systems: list[System], runs: dict[str, list[Result]], bad: dict[str, list[str]],
          skipped: dict[str, str], failed: dict[str, list[str]], repeat: int) -> list[str]:
    """The Markdown table: one row per system."""
    head = BY_NAME[HEADLINE]
    head_rate = _med([r.rate for r in runs.get(HEADLINE, [])])
    rows = ["| system | events/s (median) | runs (events/s) | elapsed s (median) | "
            f"wall s (median) | {head.label} ÷ this | output vs plain loop |",
            "|---|---|---|---|---|---|---|"]
    for s in systems:
        rs = runs.get(s.name, [])
        if s.name in skipped:
            rows.append(f"| {s.label} | skipped | | | | | {skipped[s.name]} |")
            continue
        if not rs:
            rows.append(f"| {s.label} | failed | | | | | {len(failed.get(s.name, []))} of "
                        f"{repeat} runs failed |")
            continue
        rate = _med([r.rate for r in rs])
        ratio = "n/a" if math.isnan(head_rate) or not rate else f"{head_rate / rate:.2f}x"
        checked = (f"MISMATCH in {len(bad[s.name])} of {len(rs)} runs" if bad.get(s.name)
                   else "same")
        if failed.get(s.name):
            checked += f"; {len(failed[s.name])} of {repeat} runs failed"
        rows.append(f"| {s.label} | {rate:,.0f} | {', '.join(f'{r.rate:,.0f}' for r in rs)} | "
                    f"{_med([r.elapsed for r in rs]):.2f} | {_med([r.wall for r in rs]):.2f} | "
                    f"{ratio} | {checked} |")
    return rows


# -- main -----------------------------------------------------------------------------------


def select(only: str | None) -> list[System]:
    """The systems named by ``--only`` (names or groups), in table order."""
    if not only:
        return list(SYSTEMS)
    wanted: set[str] = set()
    for name in filter(None, (x.strip() for x in only.split(","))):
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in BY_NAME:
            wanted.add(name)
        else:
            sys.exit(f"bench/compare: unknown system {name!r}; known: "
                     f"{', '.join([*BY_NAME, *GROUPS])}")
    return [s for s in SYSTEMS if s.name in wanted]


def main() -> int:
    """Set up, generate, run, check, print (and with --write, record) the comparison."""
    ap = argparse.ArgumentParser(prog="bench/compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="W1", choices=sorted(WORKLOADS))
    ap.add_argument("--events", type=int, help="events in the input (default: the "
                    "workload's, 1,000,000 for W1)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per system (median)")
    ap.add_argument("--only", help="comma-separated systems or groups: "
                    f"{', '.join([*BY_NAME, *GROUPS])}")
    ap.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    args = ap.parse_args()
    if args.repeat < 1 or (args.events is not None and args.events < 1):
        ap.error("--repeat and --events must be at least 1")
    began = time.monotonic()
    workload = WORKLOADS[args.workload]
    events = args.events or workload.events
    systems = select(args.only)
    command = shlex.join(["bench/compare", *sys.argv[1:]])
    rev, code_before = revision()
    loadavg = os.getloadavg()[0]  # before this script adds its own
    if loadavg > 0.5:
        print(f"note: load average {loadavg:.2f}: something else is using the machine; "
              "figures will be noisy", file=sys.stderr)

    pythons: dict[str, Path] = {}
    versions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for group in dict.fromkeys(["cluster", "plain", *(s.setup for s in systems)]):
        try:
            pythons[group], versions[group] = setup(group)
        except SetupError as e:
            if group in ("cluster", "plain"):
                sys.exit(f"bench/compare: cannot set up {group} (needed for the data and "
                         f"the reference): {e}")
            for s in systems:
                if s.setup == group:
                    skipped[s.name] = f"setup failed: {str(e).splitlines()[0]}"
                    print(f"SKIPPED {s.name}: setup failed: {e}", file=sys.stderr)
    data = ensure_data(workload, events, pythons["cluster"])
    ctx = Context(workload, events, data, pythons, timeout=max(600.0, events / 500))

    # The reference (and a first read that puts the file in the page cache for everyone).
    plain = BY_NAME["plain"]
    ref_out = OUT / "reference"
    shutil.rmtree(ref_out, ignore_errors=True)
    ref_out.mkdir(parents=True)
    try:
        run_plain(ctx, ref_out)
    except RunError as e:
        sys.exit(f"bench/compare: the reference run (plain loop) failed: {e}")
    ref = load(plain, ref_out / "results")
    print(f"reference (plain loop): {len(ref[0]):,} window rows, {ref[1].total():,} sessions",
          file=sys.stderr)

    runs: dict[str, list[Result]] = {}
    bad: dict[str, list[str]] = {}
    failed: dict[str, list[str]] = {}
    mismatches: list[str] = []
    active = [s for s in systems if s.name not in skipped]
    for i in range(args.repeat):
        for s in active:
            out = OUT / s.name / f"run{i + 1}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            tag = f"run {i + 1}/{args.repeat} {s.name}"
            try:
                r = s.run(ctx, out)
            except RunError as e:
                failed.setdefault(s.name, []).append(str(e))
                print(f"FAILED {tag}: {e}", file=sys.stderr)
                continue
            runs.setdefault(s.name, []).append(r)
            problems = check(ref, load(s, out / "results"))
            if r.records != events:
                problems.insert(0, f"read {r.records:,} of {events:,} events")
            notes = f" ({'; '.join(r.notes)})" if r.notes else ""
            print(f"{tag}: {r.rate:,.0f} events/s, {r.elapsed:.2f} s elapsed, "
                  f"{r.wall:.2f} s wall{notes}", file=sys.stderr)
            if problems:
                bad.setdefault(s.name, []).append(str(i + 1))
                line = f"MISMATCH {s.name} (run {i + 1}, {out.relative_to(ROOT)}): " + \
                       "; ".join(problems) + notes
                mismatches.append(line)
                print(line, file=sys.stderr)

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rev_after, code_after = revision()
    changed = []
    if code_after != code_before:
        changed = [f"WARNING: bspump-cluster's code changed during the comparison ({rev} -> "
                   f"{rev_after}); its runs mix the two."]
        print(changed[0], file=sys.stderr)
    peers = "; ".join(f"{v}" for g, v in versions.items() if g in ("bspump", "bytewax"))
    head = [f"{events:,} events of workload {workload.name} ({workload.title}); {stamp}; "
            f"{machine()}.",
            f"bspump-cluster (commit {rev}) and the plain loop on {versions['cluster']}"
            + (f"; {peers}" if peers else "") + ".",
            f"Load average at the start: {loadavg:.2f}. Command: `{command}`", *changed, ""]
    rows = table(systems, runs, bad, skipped, failed, args.repeat)
    head_rate = _med([r.rate for r in runs.get(HEADLINE, [])])
    ratios = [f"{head_rate / _med([r.rate for r in runs[s.name]]):.2f}x {s.label}"
              for s in systems if s.name != HEADLINE and runs.get(s.name)]
    tail = []
    if ratios and not math.isnan(head_rate):
        tail = ["", f"{BY_NAME[HEADLINE].label} (events/s) = " + "; ".join(ratios) + "."]
    problems = [*mismatches, *(f"FAILED {name}: {e.splitlines()[0]}"
                               for name, errors in failed.items() for e in errors)]
    block = "\n".join([*head, *rows, *tail, *([""] if problems else []),
                       *(f"- {line}" for line in problems)])
    print()
    print(block)
    minutes = (time.monotonic() - began) / 60
    print(f"\nbench/compare took {minutes:.1f} min", file=sys.stderr)
    if args.write:
        replace_section("bench/compare", block)
        print("wrote the table into bench/RESULTS.md", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
