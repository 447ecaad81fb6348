"""One run per folder: the folder lock, between two real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cluster import dirlock
from cluster.errors import StartRefused
from tests.conftest import ROOT

HOLDER = """
import sys
from pathlib import Path
from cluster import dirlock
held = dirlock.acquire(Path(sys.argv[1]))
held.claim({"config": "holder.ini"})
print("held", flush=True)
sys.stdin.read()  # hold until the test closes our stdin
"""


def test_a_folder_held_by_another_process_is_refused_naming_it_and_free_after(
        tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert not dirlock.is_free(tmp_path)
        with pytest.raises(StartRefused, match=rf"in use by another run \(pid {holder.pid}, "
                                               r"config holder\.ini"):
            dirlock.acquire(tmp_path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    # The kernel let go with the process: the next run takes the folder.
    assert dirlock.is_free(tmp_path)
    mine = dirlock.acquire(tmp_path)
    assert mine.previous["pid"] == holder.pid
    mine.release()
