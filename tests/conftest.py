"""Shared test helpers: input files, config files, and running the real CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
T0 = 1767225600.0


def make_lines(n: int = 20_000, users: int = 1500, seed: int = 7) -> list[str]:
    """JSON lines with out-of-order and late events, bad records, ISO and numeric times."""
    rng = random.Random(seed)
    lines: list[str] = []
    t = T0
    for i in range(n):
        t += rng.expovariate(1.0)
        ts = t - rng.uniform(0.0, 20.0)
        if i % 500 == 499:
            ts = t - 400.0  # behind the watermark: late
        event: dict[str, object] = {
            "user_id": f"u{int(rng.paretovariate(1.1)) % users}",
            "type": f"type{rng.randrange(5)}",
            "timestamp": round(ts, 3),
            "value": round(rng.gauss(100, 10), 3),
            "latitude": round(rng.uniform(-89.9, 89.9), 4),
            "longitude": round(rng.uniform(-179.9, -0.1) if rng.random() > 0.02
                               else rng.uniform(0.0, 179.9), 4),
        }
        if i % 97 == 0:
            event["timestamp"] = datetime.fromtimestamp(ts, UTC).isoformat()
        if i % 1500 == 1499:
            del event["user_id"]
        if i % 2500 == 2499:
            event["timestamp"] = "yesterday"
        line = json.dumps(event)
        if i % 1000 == 999:
            line = line[: len(line) // 2]  # truncated: malformed JSON
        if i % 4000 == 3999:
            line = json.dumps([1, 2, 3])  # JSON, but not an object
        lines.append(line)
    return lines


@dataclass
class Run:
    """A finished ``bspump-cluster run``."""

    returncode: int
    stdout: str
    stderr: str
    out: Path

    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())

    def jsonl(self, name: str) -> list[dict]:
        path = self.out / name
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def cli(*args: str, timeout: float = 180, env: dict[str, str] | None = None,
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cluster ARGS`` (the ``bspump-cluster`` command)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd, check=False)


def run_config(config: Path, out: Path, workers: int | None = None, in_process: bool = False,
               timeout: float = 180) -> Run:
    """Run a config to its end and collect what it printed."""
    args = ["run", str(config), "--output-dir", str(out)]
    if in_process:
        args.append("--in-process")
    elif workers is not None:
        args += ["--workers", str(workers)]
    p = cli(*args, timeout=timeout)
    return Run(p.returncode, p.stdout, p.stderr, out)


SEED_CONFIG = """
[cluster]
pipeline = example_pipelines:SeedPipeline
python_path = {configs}
key_groups = 64

[pipeline:SeedPipeline]
shard_key = user_id
time_field = timestamp
allowed_lateness = 30
source = bspump.file:FileJSONLinesSource

[pipeline:SeedPipeline:FileJSONLinesSource]
path = {input}
batch = 700

[pipeline:SeedPipeline:HourlyCountAnalyzer]
count_field = type

[matrix:PersistentMatrix]
path = {persistent}
"""


RECOVERY_CONFIG = """
[cluster]
pipeline = recovery_pipelines:RecoveryPipeline
python_path = {configs}:{integration}
{cluster}
[pipeline:RecoveryPipeline]
shard_key = user_id
time_field = timestamp
allowed_lateness = 30

[pipeline:RecoveryPipeline:FileJSONLinesSource]
path = {input}
batch = {batch}

[pipeline:RecoveryPipeline:HourlyCountAnalyzer]
count_field = type

[matrix:UserHits]
path = {persistent}
"""


def recovery_config(input: Path, persistent: Path, batch: int, **cluster: object) -> str:
    """The config of tests/integration/recovery_pipelines.py's RecoveryPipeline over
    ``input``; ``cluster`` holds the [cluster] keys a test sets (workers, checkpoints...)."""
    return RECOVERY_CONFIG.format(configs=CONFIGS, integration=ROOT / "tests" / "integration",
                                  input=input, persistent=persistent, batch=batch,
                                  cluster="".join(f"{k} = {v}\n" for k, v in cluster.items()))


# The topologies every pipeline test runs on: bspump.testing.run_pipeline's ``workers``.
PIPELINE_TOPOLOGIES = {"in-process": 0, "1-worker": 1, "3-workers": 3}


@pytest.fixture(params=list(PIPELINE_TOPOLOGIES.values()), ids=list(PIPELINE_TOPOLOGIES))
def pipeline_workers(request: pytest.FixtureRequest) -> int:
    """``workers`` for run_pipeline: a test taking this fixture runs in one process (0,
    BSPump alone), on one worker and on three workers (real processes, ZeroMQ, shm)."""
    return int(request.param)


@pytest.fixture
def seed_config(tmp_path: Path):
    """Write an input file and a config running every spec analyzer over it."""

    def make(lines: list[str], name: str = "seed.ini", extra: str = "") -> Path:
        data = tmp_path / "input.jsonl"
        data.write_text("\n".join(lines) + "\n")
        cfg = tmp_path / name
        cfg.write_text(SEED_CONFIG.format(configs=CONFIGS, input=data,
                                          persistent=tmp_path / "persistent.npy") + extra)
        return cfg

    return make


def shm_segments() -> set[str]:
    """Names of this project's shared-memory segments that exist now."""
    return {p.name for p in Path("/dev/shm").glob("bspc-*")}


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid`` with its command line."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] == "Z":
            continue
        parent[int(entry.name)] = int(fields[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        for child, pp in parent.items():
            if pp == p and child not in found:
                try:
                    found[child] = (Path(f"/proc/{child}/cmdline").read_bytes()
                                    .replace(b"\0", b" ").decode())
                except OSError:
                    found[child] = "?"
                frontier.append(child)
    return found


def run_processes(pid: int) -> list[int]:
    """Live processes of the run whose supervisor is ``pid`` (coordinator, workers)."""
    mark = f"--run-id\0{pid}.".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def remove_run_leftovers(pid: int, timeout: float = 10.0) -> None:
    """After a kill -9 of supervisor ``pid``: what the next run would remove, removed now.

    Its coordinator and workers die with it (they asked Linux to), but not at once: wait
    for them, then remove the run's folder and shared-memory segments, which nothing
    else would (a supervisor removes them on its way out, a later run on its way in).
    """
    deadline = time.monotonic() + timeout
    while run_processes(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    for folder in Path(tempfile.gettempdir()).glob(f"bspump-cluster-{pid}.*"):
        shutil.rmtree(folder, ignore_errors=True)
    for segment in Path("/dev/shm").glob(f"bspc-{pid}.*"):
        segment.unlink(missing_ok=True)


# -- nothing left behind --------------------------------------------------------------------

SESSION_ENV = "BSPUMP_TEST_SESSION"
RUN_DIR_GLOB = "bspump-cluster-*"
SEGMENT_GLOB = "bspc-*"


def _pid_of(name: str, prefix: str) -> int | None:
    """The supervisor pid a run folder or segment name starts with (``<pid>.<id>``)."""
    head = name[len(prefix):].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rfind(")") + 2:].split()[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


@dataclass
class SessionLeftovers:
    """What this test session started, so what it leaves behind can be told from others'.

    Other pytest sessions may run on the same machine at the same time, so a new run
    folder or segment is this session's only when the supervisor pid in its name is a
    process this session started: its direct children (recorded by Popen) and every
    process carrying this session's mark in its environment (sampled twice a second,
    which finds a partition task's supervisor, a grandchild, too).
    """

    token: str = field(default_factory=lambda: f"{os.getpid()}.{os.urandom(4).hex()}")
    pids: set[int] = field(default_factory=lambda: {os.getpid()})
    folders_before: set[str] = field(default_factory=set)
    segments_before: set[str] = field(default_factory=set)
    children_before: set[int] = field(default_factory=set)
    _live: set[int] = field(default_factory=set)
    _folders: list[Path] = field(default_factory=list)
    _segments: list[Path] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def marked(self) -> set[int]:
        """Live processes whose environment carries this session's mark."""
        mark = f"{SESSION_ENV}={self.token}\0".encode()
        found = set()
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/environ", "rb") as f:
                        if mark in f.read():
                            found.add(int(entry.name))
                except OSError:
                    continue
        found.discard(os.getpid())
        return found

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.pids |= self.marked()

    def start(self) -> None:
        """Note what exists now; mark every process this session starts."""
        self.folders_before = {p.name for p in Path(tempfile.gettempdir()).glob(RUN_DIR_GLOB)}
        self.segments_before = {p.name for p in Path("/dev/shm").glob(SEGMENT_GLOB)}
        self.children_before = set(descendants(os.getpid()))
        os.environ[SESSION_ENV] = self.token
        threading.Thread(target=self._sample, name="leftover-sampler", daemon=True).start()

    def left(self) -> list[str]:
        """Everything this session started that is still here, after a grace period."""
        self._stop.set()
        ignored = self.children_before | {os.getpid()}
        # Children die with their supervisor (PR_SET_PDEATHSIG) a moment later: wait.
        deadline = time.monotonic() + 10
        while True:
            live = {p for p in self.marked() | set(descendants(os.getpid()))
                    if p not in ignored and _state(p) not in ("Z", "gone")
                    # Python's own helper for a multiprocessing test: it ends with pytest.
                    and "multiprocessing.resource_tracker" not in _cmdline(p)}
            if not live or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.pids |= live
        problems = [f"process {p} still running: {_cmdline(p)}" for p in sorted(live)]
        self._live = live
        self._folders = [f for f in sorted(Path(tempfile.gettempdir()).glob(RUN_DIR_GLOB))
                         if f.name not in self.folders_before
                         and _pid_of(f.name, "bspump-cluster-") in self.pids]
        self._segments = [s for s in sorted(Path("/dev/shm").glob(SEGMENT_GLOB))
                          if s.name not in self.segments_before
                          and _pid_of(s.name, "bspc-") in self.pids]
        problems += [f"run folder {f}" for f in self._folders]
        problems += [f"shared-memory segment {s}" for s in self._segments]
        return problems

    def remove(self) -> None:
        """Clean up what :meth:`left` found, so one leaking test does not burden later runs."""
        for p in self._live:
            if _state(p) not in ("Z", "gone"):
                os.kill(p, signal.SIGKILL)
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)
        for segment in self._segments:
            segment.unlink(missing_ok=True)


_session = SessionLeftovers()
_popen_init = subprocess.Popen.__init__


def _recording_init(self: subprocess.Popen, *args: object, **kwargs: object) -> None:
    # Every supervisor a test starts directly: its pid names its run folder and segments,
    # which must be told from other sessions' after it is gone.
    _popen_init(self, *args, **kwargs)  # type: ignore[arg-type]
    _session.pids.add(self.pid)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[SessionLeftovers]:
    """Fail the session naming every run folder, segment or process its tests left."""
    _session.start()
    subprocess.Popen.__init__ = _recording_init  # type: ignore[method-assign]
    try:
        yield _session
    finally:
        subprocess.Popen.__init__ = _popen_init  # type: ignore[method-assign]
    problems = _session.left()
    if problems:
        _session.remove()
        pytest.fail("this test session left behind (now removed):\n  " + "\n  ".join(problems),
                    pytrace=False)
