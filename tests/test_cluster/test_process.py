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
