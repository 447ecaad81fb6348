"""Durability at the system-call level: what the cluster relies on after a crash is on disk
before anything points at it.

The writes run under ``strace``, which records every fsync and rename of every process
with the path behind each descriptor. The rules checked, for each whole file (checkpoint
files, manifests, matrices, summary, report): its bytes are fsynced under the temporary
name before the rename, and its folder is fsynced after the rename; in each checkpoint
folder the manifest is renamed last, after the workers fsynced the folder; the result
files whose lengths a manifest records are fsynced before that manifest is renamed.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import make_lines, recovery_config

STRACE = shutil.which("strace")
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
pytestmark = pytest.mark.skipif(STRACE is None and not IN_CI,
                                reason="strace is not installed (CI installs it)")

BSPUMP_CLUSTER = Path(sys.executable).parent / "bspump-cluster"

_FSYNC = re.compile(r"^(\d+\.\d+) f(?:data)?sync\(\d+<(.+)>\) = 0$")
_RENAME = re.compile(r'^(\d+\.\d+) rename\("(.+)", "(.+)"\) = 0$')
_RENAMEAT = re.compile(
    r'^(\d+\.\d+) renameat2?\((?:AT_FDCWD|\d+<[^>]*>), "(.+)", (?:AT_FDCWD|\d+<[^>]*>), '
    r'"(.+)"(?:, [A-Z_|0-9]+)?\) = 0$')


@dataclass(frozen=True)
class Call:
    """One fsync or rename, as strace saw it."""

    t: float
    pid: int
    kind: str  # "fsync" or "rename"
    path: str  # what was fsynced, or the rename's target
    source: str = ""  # the rename's source


def _traced(argv: list[str], log_dir: Path, cwd: Path) -> tuple[subprocess.CompletedProcess[str],
                                                              list[Call]]:
    """Run ``argv`` under strace; every fsync and rename of it and its children, in order."""
    assert STRACE is not None, "strace is needed (apt-get install strace)"
    log_dir.mkdir()
    p = subprocess.run([STRACE, "-f", "-ff", "--seccomp-bpf", "-ttt", "-y", "-s", "4096",
                        "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
                        "-o", str(log_dir / "trace"), *argv],
                       cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    calls: list[Call] = []
    for log in log_dir.glob("trace.*"):
        pid = int(log.suffix[1:])
        for line in log.read_text().splitlines():
            if m := _FSYNC.match(line):
                calls.append(Call(float(m[1]), pid, "fsync", m[2]))
            elif m := _RENAME.match(line) or _RENAMEAT.match(line):
                calls.append(Call(float(m[1]), pid, "rename", m[3], m[2]))
    return p, sorted(calls, key=lambda c: c.t)


def _check_whole_file_writes(calls: list[Call], under: Path) -> list[Call]:
    """Each rename under ``under``: temp name fsynced before, folder fsynced after."""
    renames = [c for c in calls if c.kind == "rename" and c.path.startswith(f"{under}/")]
    assert renames, "nothing was renamed: the trace saw no writes"
    for r in renames:
        src, dst = Path(r.source), Path(r.path)
        assert src.parent == dst.parent and src.name.startswith(f".{dst.name}.tmp."), \
            f"{dst} was not written by the one atomic writer (temp name {src.name})"
        before = [c for c in calls if c.kind == "fsync" and c.pid == r.pid and c.t < r.t
                  and c.path == r.source]
        assert before, f"{dst}: renamed without its data fsynced first"
        after = [c for c in calls if c.kind == "fsync" and c.pid == r.pid and c.t > r.t
                 and c.path == str(dst.parent)]
        assert after, f"{dst}: its folder was not fsynced after the rename"
    return renames


def test_one_atomic_write_is_fsync_rename_fsync_of_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "out" / "summary.json"
    script = ("from pathlib import Path\nfrom cluster.outputs import atomic_write_bytes\n"
              f"atomic_write_bytes(Path({str(target)!r}), b'{{}}')\n")
    p, calls = _traced([sys.executable, "-c", script], tmp_path / "trace", tmp_path)
    assert p.returncode == 0, p.stderr
    mine = [c for c in calls if str(tmp_path / "out") in c.path]
    tmp = f"{target.parent}/.summary.json.tmp."
    assert [(c.kind, c.path if c.kind == "fsync" or not c.path.startswith(tmp) else tmp)
            for c in mine] == [
        ("fsync", mine[0].path), ("rename", str(target)), ("fsync", str(target.parent))]
    assert mine[0].path.startswith(tmp) and mine[1].source == mine[0].path




def test_a_cluster_run_writes_in_a_crash_safe_order(tmp_path: Path) -> None:
    data = tmp_path / "input.jsonl"
    data.write_text("\n".join(make_lines(24_000, users=500, seed=9)) + "\n")
    config = tmp_path / "durable.ini"
    config.write_text(recovery_config(data, tmp_path / "UserHits.npy", batch=200, key_groups=16,
                                      workers=2, checkpoint_events=600,
                                      checkpoint_interval=60))
    out = tmp_path / "out"
    p, calls = _traced([str(BSPUMP_CLUSTER), "run", str(config), "-o", str(out)],
                       tmp_path / "trace", tmp_path)
    assert p.returncode == 0, p.stderr

    renames = _check_whole_file_writes(calls, tmp_path)
    named = {str(Path(r.path).relative_to(out)) if r.path.startswith(f"{out}/")
             else r.path for r in renames}
    for expected in ("summary.json", "report.html", "GeoMatrix.npy", "UserHits.npy",
                     str(tmp_path / "UserHits.npy")):
        assert expected in named, f"{expected} was not written atomically"

    manifests = [r for r in renames if r.path.endswith("/MANIFEST.json")]
    assert len(manifests) >= 3, "expected several checkpoints"
    for m in manifests:
        folder = str(Path(m.path).parent)
        into = [r for r in renames if str(Path(r.path).parent) == folder and r is not m]
        assert {Path(r.path).name for r in into} >= {"w0.state.msgpack", "w1.state.msgpack"}
        assert all(r.t < m.t for r in into), f"{m.path}: a file was renamed in after it"
        workers_synced = [c for c in calls if c.kind == "fsync" and c.path == folder
                          and c.pid != m.pid]
        assert {c.pid for c in workers_synced} == {r.pid for r in into}, \
            f"{folder}: a worker did not fsync the folder after its renames"
        assert all(c.t < m.t for c in workers_synced), \
            f"{m.path} renamed before the workers' files were durable"

    # Result files: what a manifest records the length of is on disk before it.
    results = {c.path for c in calls if c.kind == "fsync" and c.path.endswith(".jsonl")}
    assert {str(out / "dead-letters.jsonl"), str(out / "events.w0.jsonl"),
            str(out / "events.w1.jsonl"),
            str(out / "RecoveryPipeline.HourlyCountAnalyzer.windows.jsonl")} <= results
    for earlier, later in itertools.pairwise(manifests):
        for path in results:
            if any(c.path == path and c.t < earlier.t for c in calls if c.kind == "fsync"):
                assert any(c.path == path and earlier.t < c.t < later.t
                           for c in calls if c.kind == "fsync"), \
                    f"{path} not fsynced before {later.path}"
    last = manifests[-1]
    for path in (out / "dead-letters.jsonl", out / "events.w0.jsonl", out / "events.w1.jsonl"):
        assert any(c.path == str(path) and c.t < last.t for c in calls if c.kind == "fsync"), \
            f"{path} not fsynced before {last.path}"
