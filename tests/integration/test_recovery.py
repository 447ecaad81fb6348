"""Checkpoints with real processes: kill -9 workers, the coordinator, the whole cluster;
stop and restart on fewer or more workers; a corrupt newest checkpoint.

Each case ends with results equal to the independent reference: every input event
counted exactly once in windows, sessions and matrices.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    ROOT,
    Run,
    descendants,
    make_lines,
    recovery_config,
    run_config,
    shm_segments,
)
from tests.integration.checks import assert_results_match
from tests.reference import compute

PIPE = "RecoveryPipeline"
HIT_BUCKETS = 64  # as in recovery_pipelines.py (which imports from configs/)



@pytest.fixture(scope="module")
def lines() -> list[str]:
    return make_lines(50_000, users=3000, seed=11)


@pytest.fixture(scope="module")
def reference(lines):
    ref = compute(lines, lateness=30, resolution=60, session_timeout=1800)
    hits = np.zeros(HIT_BUCKETS)
    for _, event in ref.accepted:
        hits[int(event["user_id"][1:]) % HIT_BUCKETS] += 1
    ref.hits = hits  # type: ignore[attr-defined]
    return ref


@pytest.fixture
def setup(tmp_path: Path, lines):
    data = tmp_path / "input.jsonl"
    data.write_text("\n".join(lines) + "\n")

    def config(workers: int) -> Path:
        cfg = tmp_path / f"c{workers}.ini"
        cfg.write_text(recovery_config(data, tmp_path / "UserHits.npy", batch=500,
                                       key_groups=64, workers=workers, checkpoint_events=6000,
                                       checkpoint_interval=0.5, max_restarts=2))
        return cfg

    return config, tmp_path / "out"


def _check(run: Run, reference) -> None:
    assert run.returncode == 0, run.stderr
    assert_results_match(run, reference, PIPE)
    np.testing.assert_array_equal(np.load(run.out / "UserHits.npy"), reference.hits)
    np.testing.assert_array_equal(np.load(run.out.parent / "UserHits.npy"), reference.hits)
    # The sink's files (one per worker) hold every event that got through, once.
    written = sum(len(p.read_text().splitlines()) for p in run.out.glob("events.w*.jsonl"))
    assert written == len(reference.accepted) - reference.geo_failures


def _start(config: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cluster", "run", str(config), "-o", str(out),
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _workers(proc: subprocess.Popen[str], n: int) -> dict[int, str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = {p: c for p, c in descendants(proc.pid).items() if "-m workers" in c}
        if len(kids) == n:
            return kids
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("workers did not start")


def _checkpointed(proc: subprocess.Popen[str], out: Path) -> None:
    """Wait until the run has completed a checkpoint (and is still running)."""
    deadline = time.monotonic() + 60
    while not list((out / "checkpoints").glob("cp-*/MANIFEST.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint was completed"
        time.sleep(0.01)


def _finish(proc: subprocess.Popen[str], out: Path) -> Run:
    stdout, stderr = proc.communicate(timeout=120)
    return Run(proc.returncode, stdout, stderr, out)


@pytest.mark.parametrize("seed", [1, 2])
def test_worker_killed_at_random_moment(seed, setup, reference) -> None:
    rng = random.Random(seed)
    config, out = setup
    proc = _start(config(2), out)
    workers = _workers(proc, 2)
    _checkpointed(proc, out)
    time.sleep(rng.uniform(0.0, 0.3))
    victim = rng.choice(sorted(workers))
    os.kill(victim, signal.SIGKILL)
    run = _finish(proc, out)
    assert f"(pid {victim}) died: killed by SIGKILL; restarting from the last checkpoint" \
        in run.stderr
    _check(run, reference)


def test_coordinator_killed(setup, reference) -> None:
    config, out = setup
    proc = _start(config(2), out)
    _workers(proc, 2)
    _checkpointed(proc, out)
    coordinator = next(p for p, c in descendants(proc.pid).items() if "-m coordinator" in c)
    os.kill(coordinator, signal.SIGKILL)
    run = _finish(proc, out)
    assert f"coordinator (pid {coordinator}) died: killed by SIGKILL; restarting" in run.stderr
    _check(run, reference)


def test_whole_cluster_killed_then_same_command_resumes(setup, reference) -> None:
    config, out = setup
    proc = _start(config(2), out)
    _workers(proc, 2)
    everyone = set(descendants(proc.pid))
    _checkpointed(proc, out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in everyone):
        time.sleep(0.05)
    assert not [p for p in everyone if Path(f"/proc/{p}/cmdline").exists()
                and Path(f"/proc/{p}/cmdline").read_bytes()], "orphans left running"
    leftovers = {s for s in shm_segments() if s.startswith(f"bspc-{proc.pid}.")}
    run = run_config(config(2), out)
    assert run.summary()["restored_from_checkpoint"] is not None
    assert not leftovers & shm_segments(), "the dead run's shared memory was not removed"
    _check(run, reference)


@pytest.mark.parametrize("after", [1, 4], ids=["2->1 workers", "2->4 workers"])
def test_stop_and_restart_on_other_worker_count(after, setup, reference) -> None:
    config, out = setup
    proc = _start(config(2), out)
    _workers(proc, 2)
    _checkpointed(proc, out)
    proc.send_signal(signal.SIGTERM)
    first = _finish(proc, out)
    assert first.returncode == 143, first.stderr
    assert "final checkpoint" in first.stderr and "written" in first.stderr, first.stderr
    run = run_config(config(after), out)
    summary = run.summary()
    assert summary["restored_from_checkpoint"] is not None
    assert summary["workers"] == after
    _check(run, reference)


def test_corrupt_newest_checkpoint_falls_back(setup, reference) -> None:
    config, out = setup
    proc = _start(config(2), out)
    _workers(proc, 2)
    _checkpointed(proc, out)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert _finish(proc, out).returncode == 143
    checkpoints = sorted((out / "checkpoints").glob("cp-*"))
    assert len(checkpoints) >= 2
    newest = checkpoints[-1]
    victim = sorted(newest.glob("w1.*.npy"))[0]
    victim.write_bytes(victim.read_bytes()[:-8])
    run = run_config(config(2), out)
    assert f"skipping checkpoint {newest}: {victim.name} has" in run.stderr
    assert run.summary()["restored_from_checkpoint"] == int(checkpoints[-2].name[3:])
    _check(run, reference)
