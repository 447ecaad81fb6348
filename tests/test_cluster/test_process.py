"""``cluster.process``: a child dies with its parent and starts with no signal blocked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster.process import child_setup

_REPORT = """
import ctypes, signal
libc = ctypes.CDLL(None, use_errno=True)
sig = ctypes.c_int(0)
libc.prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
blocked = [l.split()[1] for l in open("/proc/self/status") if l.startswith("SigBlk:")][0]
print(sig.value, int(blocked, 16))
"""


def test_a_child_asks_to_die_with_its_parent_and_unblocks_signals() -> None:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        out = subprocess.run([sys.executable, "-c", _REPORT], preexec_fn=child_setup,
                             capture_output=True, text=True, check=True).stdout
        plain = subprocess.run([sys.executable, "-c", _REPORT], capture_output=True, text=True,
                               check=True).stdout
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    assert out.split() == [str(int(signal.SIGKILL)), "0"]
    # Without it, the child would inherit the mask and outlive its parent.
    pdeath, blocked = map(int, plain.split())
    assert pdeath == 0 and blocked & (1 << (signal.SIGTERM - 1))


_PARENT = """
import subprocess, sys, time
from cluster.process import child_setup
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         preexec_fn=child_setup)
print(child.pid, flush=True)
time.sleep(60)
"""


def test_the_child_is_killed_when_its_parent_is(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child):
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running, neither gone nor a zombie."""
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
    except FileNotFoundError:
        return False


def test_a_child_reads_back_the_run_its_parent_describes(tmp_path: Path) -> None:
    import argparse

    from cluster.config import Config, load_cluster_settings
    from cluster.process import add_child_arguments, child_arguments, child_settings
    from tests.conftest import CONFIGS, SEED_CONFIG

    cfg = tmp_path / "c.ini"
    cfg.write_text(SEED_CONFIG.format(configs=CONFIGS, input=tmp_path / "in.jsonl",
                                      persistent=tmp_path / "p"))
    for partition in (None, "my:topic:3"):
        parent = load_cluster_settings(Config.load(cfg), cfg, workers=3,
                                       output_dir=str(tmp_path / "out"), partition=partition)
        ap = argparse.ArgumentParser()
        add_child_arguments(ap)
        args = ap.parse_args(child_arguments(parent, "42.ab", tmp_path / "run", 3))
        assert (args.run_id, args.run_dir) == ("42.ab", str(tmp_path / "run"))
        child = child_settings(args)
        assert (child.workers, child.output_dir, child.partition, child.checkpoint_dir) == \
            (parent.workers, parent.output_dir, parent.partition, parent.checkpoint_dir)
