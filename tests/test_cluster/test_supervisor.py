"""The supervisor watching real (tiny) child processes: a child that dies is named and
the others stopped; SIGTERM once asks the coordinator to stop, twice kills."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from cluster import exits
from cluster.config import Config, load_cluster_settings
from cluster.supervisor import STOP_GRACE, Supervisor

CONFIG = """
[cluster]
pipeline = nowhere:Nothing
checkpoint_dir = none

[pipeline:Nothing]
shard_key = user
"""

SLEEP = "import time; time.sleep(60)"


@pytest.fixture
def supervisor(tmp_path: Path):
    path = tmp_path / "s.ini"
    path.write_text(CONFIG)
    settings = load_cluster_settings(Config.load(path), path, workers=2,
                                     output_dir=str(tmp_path / "out"))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sup = Supervisor(settings)
    yield sup
    sup.cleanup()  # kills what is left and removes the run folder
    for s, h in handlers.items():
        signal.signal(s, h)


def child(sup: Supervisor, name: str, code: str, *args: str):
    """A child started the way the supervisor starts its own."""
    return sup._spawn(name, [sys.executable, "-c", code, *args])


@pytest.mark.parametrize(("code", "said"), [("import sys, time; time.sleep(0.3); sys.exit(5)",
                                             "exit code 5"),
                                            ("import os, time; time.sleep(0.3); "
                                             "os.kill(os.getpid(), 9)", "killed by SIGKILL")],
                         ids=["exit-5", "sigkill"])
def test_a_worker_that_dies_is_named_and_the_others_are_stopped(
        supervisor: Supervisor, code: str, said: str, caplog: pytest.LogCaptureFixture) -> None:
    supervisor.coordinator = child(supervisor, "coordinator", SLEEP)
    supervisor.worker_procs = [child(supervisor, "worker 0", code),
                               child(supervisor, "worker 1", SLEEP)]
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="bspump-cluster"):
        rc = supervisor.watch()
    assert rc == exits.WORKER_DIED
    dead = supervisor.worker_procs[0].proc
    assert f"worker 0 (pid {dead.pid}) died: {said}; stopping the run" in caplog.text
    # Every other process is gone too, killed well before it would have ended.
    assert supervisor.coordinator.proc.poll() is not None
    assert supervisor.worker_procs[1].proc.poll() is not None
    assert time.monotonic() - began < 30


def _signal_self_when(supervisor: Supervisor, ready: Path, times: int) -> threading.Thread:
    """SIGTERM this process ``times`` times once the supervisor's handler is in and the
    coordinator child has set its own."""
    def run() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                ready.exists() and signal.getsignal(signal.SIGTERM) == supervisor._on_signal):
            time.sleep(0.02)
        for _ in range(times):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.3)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigterm_once_asks_the_coordinator_to_stop(supervisor: Supervisor,
                                                   tmp_path: Path) -> None:
    ready, stopped = tmp_path / "ready", tmp_path / "stopped"
    graceful = ("import pathlib, signal, sys, time\n"
                "def stop(*_):\n"
                "    pathlib.Path(sys.argv[2]).write_text('stopped')\n"
                "    sys.exit(0)\n"
                "signal.signal(signal.SIGTERM, stop)\n"
                "pathlib.Path(sys.argv[1]).write_text('ready')\n"
                "time.sleep(60)\n")
    supervisor.coordinator = child(supervisor, "coordinator", graceful, str(ready), str(stopped))
    supervisor.worker_procs = [child(supervisor, "worker 0", SLEEP)]
    thread = _signal_self_when(supervisor, ready, 1)
    rc = supervisor.watch()
    thread.join()
    # The coordinator ran its own stop (a final checkpoint, in a real run) and exited 0:
    # a stop after the input ended changes nothing, so the run's code is its.
    assert stopped.read_text() == "stopped"
    assert supervisor.coordinator.proc.returncode == 0
    assert rc == 0


def test_sigterm_twice_kills_a_coordinator_that_does_not_stop(supervisor: Supervisor,
                                                              tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    deaf = ("import pathlib, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "pathlib.Path(sys.argv[1]).write_text('ready')\n"
            "time.sleep(60)\n")
    supervisor.coordinator = child(supervisor, "coordinator", deaf, str(ready))
    supervisor.worker_procs = [child(supervisor, "worker 0", SLEEP)]
    thread = _signal_self_when(supervisor, ready, 2)
    began = time.monotonic()
    rc = supervisor.watch()
    thread.join()
    assert supervisor.coordinator.proc.returncode == -signal.SIGKILL
    assert rc == exits.STOPPED  # 128 + SIGTERM, the first signal
    # Killed by the second signal, not by the grace period running out.
    assert time.monotonic() - began < STOP_GRACE
    assert supervisor.worker_procs[0].proc.poll() is not None
