"""Process lifecycle with real processes: config errors, signals, a dying worker, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT, cli, descendants, shm_segments

ENDLESS = f"""
[cluster]
pipeline = spec_examples:AggregationPipeline
python_path = {CONFIGS}
workers = 2

[pipeline:AggregationPipeline]
shard_key = user_id
time_field = timestamp
source = bspump.generator:GeneratorSource
sink = bspump.common:NullSink

[pipeline:AggregationPipeline:GeneratorSource]
count = 0
rate = 20000
"""


def _start(config: Path, out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cluster", "run", str(config), "-o", str(out),
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _segments_of(proc: subprocess.Popen[str]) -> set[str]:
    # Only this run's (named after its supervisor): other runs may share the machine.
    return {s for s in shm_segments() if s.startswith(f"bspc-{proc.pid}.")}


def _wait_workers(proc: subprocess.Popen[str], n: int, timeout: float = 30) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = {p: c for p, c in descendants(proc.pid).items() if "-m workers" in c}
        if len(kids) == n:
            time.sleep(1.0)  # let events flow
            return kids
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)
    raise AssertionError("workers did not start")


@pytest.fixture
def endless(tmp_path: Path) -> Path:
    cfg = tmp_path / "endless.ini"
    cfg.write_text(ENDLESS)
    return cfg


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_signal_stops_everything_within_5s(endless: Path, tmp_path: Path, sig) -> None:
    proc = _start(endless, tmp_path / "out")
    _wait_workers(proc, 2)
    everyone = set(descendants(proc.pid))
    sent = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole process group
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    took = time.monotonic() - sent
    assert took < 5.0, f"took {took:.1f} s"
    assert proc.returncode == 128 + sig, err
    alive = {p for p in everyone if Path(f"/proc/{p}").exists()
             and "Z" not in Path(f"/proc/{p}/stat").read_text().split(") ")[1][:1]}
    assert not alive, f"left running: {alive}"
    assert not _segments_of(proc), "the run's shared memory was not removed"
    assert "stopped" in err


def test_dead_worker_is_named_and_stops_the_run(endless: Path, tmp_path: Path) -> None:
    """Without checkpoints there is nothing to restart from: the run stops with exit 3."""
    endless.write_text(endless.read_text().replace("workers = 2", "workers = 2\n"
                                                   "checkpoint_dir = none"))
    proc = _start(endless, tmp_path / "out")
    workers = _wait_workers(proc, 2)
    everyone = set(descendants(proc.pid))
    victim = sorted(workers)[1]
    index = workers[victim].split("--worker ")[1].split()[0]
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 3, err
    assert f"worker {index} (pid {victim}) died: killed by SIGKILL; stopping the run" in err
    assert not [p for p in everyone if Path(f"/proc/{p}/cmdline").exists()
                and Path(f"/proc/{p}/cmdline").read_bytes()]


def test_a_dead_worker_is_one_json_event_naming_the_process(endless: Path,
                                                            tmp_path: Path) -> None:
    endless.write_text(endless.read_text().replace("workers = 2", "workers = 2\n"
                                                   "checkpoint_dir = none"))
    proc = _start(endless, tmp_path / "out", "--log-format", "json")
    workers = _wait_workers(proc, 2)
    victim = min(workers)
    index = workers[victim].split("--worker ")[1].split()[0]
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 3, err
    by_event = {line.get("event"): line
                for line in (json.loads(x) for x in err.splitlines() if x.startswith("{"))}
    died = by_event["died"]
    assert died["role"] == "supervisor" and died["level"] == "error"
    assert died["process"] == f"worker {index}" and died["pid"] == victim
    assert died["exit"] == "killed by SIGKILL" and died["action"] == "stopping the run"
    assert died["message"] == f"worker {index} (pid {victim}) died: killed by SIGKILL; " \
                              "stopping the run"
    start = by_event["start"]
    assert start["workers"] == 2 and start["coordinator_pid"] != proc.pid
    assert sorted(int(p) for p in start["worker_pids"].split(", ")) == sorted(workers)
    stop = by_event["stop"]
    assert stop["exit_code"] == 3 and stop["outcome"] == "a worker died"
    assert not _segments_of(proc), "the run's shared memory was not removed"


BAD_CONFIGS = [
    ("[cluster]\npipeline = spec_examples:AggregationPipeline\nworkers = many\n",
     "[cluster] workers", "expected a whole number"),
    ("[cluster]\npipeline = spec_examples:AggregationPipeline\n",
     "[pipeline:AggregationPipeline]", "missing section"),
    ("[cluster]\npipeline = no_such_module:Pipe\n[pipeline:Pipe]\nshard_key = user_id\n",
     "[cluster] pipeline", "cannot import 'no_such_module'"),
    ("[cluster]\npipeline = spec_examples:AggregationPipeline\nwokers = 2\n",
     "[cluster] wokers", "unknown key"),
    (ENDLESS + "\n[pipeline:AggregationPipeline:HourlyCountAnalyzer]\nresolution = fast\n",
     "[pipeline:AggregationPipeline:HourlyCountAnalyzer] resolution", "expected a number"),
    (ENDLESS + "\n[pipeline:AggregationPipeline:TimeWindowAnalyzer]\nwindow_sise = 60\n",
     "[pipeline:AggregationPipeline:TimeWindowAnalyzer] window_sise", "unknown key"),
    (ENDLESS + "\n[pipeline:AggregationPipeline:NoSuchAnalyzer]\nx = 1\n",
     "[pipeline:AggregationPipeline:NoSuchAnalyzer]", "no processor"),
]


@pytest.mark.parametrize(("text", "where", "what"), BAD_CONFIGS)
def test_broken_config_exits_2_naming_the_key(tmp_path: Path, text: str, where: str,
                                              what: str) -> None:
    cfg = tmp_path / "bad.ini"
    if "python_path" not in text:
        text = text.replace("[cluster]\n", f"[cluster]\npython_path = {CONFIGS}\n", 1)
    cfg.write_text(text)
    p = cli("run", str(cfg), "-o", str(tmp_path / "out"), timeout=60)
    assert p.returncode == 2, p.stderr
    assert str(cfg) in p.stderr and where in p.stderr and what in p.stderr, p.stderr
    assert "workers (" not in p.stderr  # the supervisor never got to start a worker


def test_layout_prints_owned_key_groups(tmp_path: Path) -> None:
    cfg = tmp_path / "c.ini"
    cfg.write_text(ENDLESS.replace("workers = 2", "workers = 3\nkey_groups = 10"))
    p = cli("layout", str(cfg), "--key", "u42", "--key", "u7")
    assert p.returncode == 0, p.stderr
    assert "worker 0: key groups 0-3 (4 groups)" in p.stdout
    assert "worker 1: key groups 4-6 (3 groups)" in p.stdout
    assert "worker 2: key groups 7-9 (3 groups)" in p.stdout
    for key in ("u42", "u7"):
        group = zlib.crc32(key.encode()) % 10
        owner = 0 if group <= 3 else (1 if group <= 6 else 2)
        assert f"key {key!r}: key group {group}, worker {owner}" in p.stdout
