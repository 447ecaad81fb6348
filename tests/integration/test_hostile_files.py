"""Files that cannot be turned against the user, with real runs.

A stopped run leaves checkpoints; each case copies them, plants something hostile
(a manifest naming files outside its folder or a FIFO, a malformed manifest, a link at
a result path) and runs the same config again. A manifest that fails is skipped with
a warning and the previous checkpoint is used; the results still equal the
independent reference. Fresh runs check the files' permissions, the ``http`` opt-in
and that a ``msgpack.py`` next to the user is not imported in place of msgpack.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.conftest import ROOT, Run, make_lines, recovery_config, run_config
from tests.integration.checks import assert_results_match
from tests.reference import compute

PIPE = "RecoveryPipeline"
BSPUMP_CLUSTER = Path(sys.executable).parent / "bspump-cluster"


PRECIOUS = "the user's own file: a run must neither write nor cut it\n" * 20


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return make_lines(20_000, users=2000, seed=5)


@pytest.fixture(scope="module")
def reference(lines):
    return compute(lines, lateness=30, resolution=60, session_timeout=1800)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, lines) -> tuple[Path, Path]:
    """A config and the output folder of a run stopped with SIGTERM after a checkpoint."""
    base = tmp_path_factory.mktemp("stopped")
    data = base / "input.jsonl"
    data.write_text("\n".join(lines) + "\n")
    config = base / "hostile.ini"
    config.write_text(recovery_config(data, base / "UserHits.npy", batch=300, key_groups=32,
                                      workers=2, checkpoint_events=3000,
                                      checkpoint_interval=0.3, max_restarts=0))
    out = base / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(config), "-o", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list((out / "checkpoints").glob("cp-*/MANIFEST.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint was completed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert len(list((out / "checkpoints").glob("cp-*/MANIFEST.json"))) >= 2, stderr
    return config, out


def _copy(stopped: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    config, out = stopped
    mine = tmp_path / "out"
    shutil.copytree(out, mine, symlinks=True)
    return config, mine, sorted((mine / "checkpoints").glob("cp-*"))


def _edit_manifest(folder: Path, change) -> None:
    path = folder / "MANIFEST.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _entry(path: Path) -> dict[str, int]:
    data = path.read_bytes()
    return {"size": len(data), "crc32": zlib.crc32(data)}


def _check_fell_back(run: Run, reference, previous: Path, warning: str) -> None:
    assert run.returncode == 0, run.stderr
    assert warning in run.stderr
    assert run.summary()["restored_from_checkpoint"] == int(previous.name[3:])
    assert_results_match(run, reference, PIPE)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "fifo"])
def test_manifest_naming_outside_files_or_a_fifo_is_skipped(kind, stopped, tmp_path,
                                                            reference) -> None:
    config, out, cps = _copy(stopped, tmp_path)
    newest, previous = cps[-1], cps[-2]
    outside = tmp_path / "outside.txt"  # size and crc32 recorded: only the name is wrong
    outside.write_text(PRECIOUS)
    if kind == "dotdot":
        name = "../../../outside.txt"
        assert (newest / name).resolve() == outside.resolve()
        _edit_manifest(newest, lambda m: m["files"].update({name: _entry(outside)}))
        problem = f"manifest names {name!r}, not a file of the checkpoint folder"
    elif kind == "absolute":
        name = str(outside)
        _edit_manifest(newest, lambda m: m["files"].update({name: _entry(outside)}))
        problem = f"manifest names {name!r}, not a file of the checkpoint folder"
    else:
        os.mkfifo(newest / "w0.extra.npy")
        _edit_manifest(newest, lambda m: m["files"].update(
            {"w0.extra.npy": {"size": 0, "crc32": 0}}))
        problem = "w0.extra.npy is not a regular file"
    run = run_config(config, out, timeout=90)
    _check_fell_back(run, reference, previous, f"skipping checkpoint {newest}: {problem}")


@pytest.mark.parametrize("kind", ["not json", "no outputs", "file entry not an object"])
def test_malformed_manifest_falls_back_to_the_previous(kind, stopped, tmp_path,
                                                       reference) -> None:
    config, out, cps = _copy(stopped, tmp_path)
    newest, previous = cps[-1], cps[-2]
    if kind == "not json":
        (newest / "MANIFEST.json").write_text('{"format": 1, "files": {')
        problem = "manifest unreadable"
    elif kind == "no outputs":
        _edit_manifest(newest, lambda m: m.pop("outputs"))
        problem = 'MANIFEST.json: field "outputs" is missing'
    else:
        _edit_manifest(newest, lambda m: m["files"].update({"w0.state.msgpack": 12}))
        problem = 'MANIFEST.json: field "files[\'w0.state.msgpack\']" must be a map, got integer'
    run = run_config(config, out, timeout=90)
    _check_fell_back(run, reference, previous, f"skipping checkpoint {newest}: {problem}")


@pytest.mark.parametrize("name", ["dead-letters.jsonl", "events.w0.jsonl"],
                         ids=["coordinator's result file", "sink file of worker 0"])
def test_restore_refuses_a_link_at_a_result_path(name, stopped, tmp_path) -> None:
    config, out, _ = _copy(stopped, tmp_path)
    target = tmp_path / "precious.txt"
    target.write_text(PRECIOUS)
    assert (out / name).stat().st_size > 0  # the checkpoint recorded a length to cut to
    (out / name).unlink()
    (out / name).symlink_to(target)
    run = run_config(config, out, timeout=90)
    assert target.read_text() == PRECIOUS
    assert run.returncode != 0
    assert f"{out / name}: is a symbolic link" in run.stderr
    # A refusal that names the path, never a traceback (a worker's goes to the coordinator).
    assert "Traceback" not in run.stderr, run.stderr
    if name == "dead-letters.jsonl":
        assert run.returncode == 1
        errors = [x for x in run.stderr.splitlines() if "symbolic link" in x]
        assert len(errors) == 1, run.stderr


def _fresh_config(tmp_path: Path, extra: str = "", folder: Path | None = None) -> Path:
    folder = folder or tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "input.jsonl"
    data.write_text("\n".join(make_lines(3000, users=300, seed=3)) + "\n")
    config = folder / "fresh.ini"
    config.write_text(recovery_config(data, tmp_path / "UserHits.npy", batch=300, key_groups=32,
                                      workers=2, checkpoint_events=3000,
                                      checkpoint_interval=0.3, max_restarts=0)
                      .replace("[cluster]\n", f"[cluster]\n{extra}", 1))
    return config


def test_result_files_are_owner_only_and_a_link_is_not_followed(tmp_path) -> None:
    config = _fresh_config(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text(PRECIOUS)
    (out / f"{PIPE}.HourlyCountAnalyzer.windows.jsonl").symlink_to(target)
    old_umask = os.umask(0o022)
    try:
        run = run_config(config, out)
    finally:
        os.umask(old_umask)
    assert run.returncode == 0, run.stderr
    assert target.read_text() == PRECIOUS
    assert not (out / f"{PIPE}.HourlyCountAnalyzer.windows.jsonl").is_symlink()
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    for expected in ("dead-letters.jsonl", "late-events.jsonl", "summary.json", "report.html",
                     f"{PIPE}.HourlyCountAnalyzer.windows.jsonl", "events.w0.jsonl",
                     "GeoMatrix.npy", "UserHits.npy"):
        assert expected in files
    modes = {f: oct(stat.S_IMODE((out / f).stat().st_mode)) for f in files}
    assert modes == {f: oct(0o600) for f in files}


def test_public_http_needs_the_opt_in_and_is_announced(tmp_path) -> None:
    config = _fresh_config(tmp_path, "http = 0.0.0.0:0\n")
    run = run_config(config, tmp_path / "out")
    assert run.returncode == 2, run.stderr
    assert f"{config} [cluster] http: 0.0.0.0 is not a loopback address" in run.stderr
    assert "http_public = yes" in run.stderr
    assert not (tmp_path / "out" / "summary.json").exists()

    config = _fresh_config(tmp_path, "http = 0.0.0.0:0\nhttp_public = yes\n")
    run = run_config(config, tmp_path / "out")
    assert run.returncode == 0, run.stderr
    warnings = [x for x in run.stderr.splitlines()
                if "serving the run's figures to the network on 0.0.0.0:" in x]
    assert len(warnings) == 1, run.stderr


SHADOW = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
raise ImportError("the msgpack.py of {where} was imported instead of msgpack")
"""


@pytest.mark.parametrize("where", ["working directory", "config folder"])
def test_a_msgpack_py_beside_the_user_is_not_imported(where, tmp_path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    folder = cwd if where == "working directory" else tmp_path / "configs"
    config = _fresh_config(tmp_path, folder=folder)
    marker = tmp_path / "shadow-imported"
    (folder / "msgpack.py").write_text(SHADOW.format(marker=str(marker), where=where))
    # The installed command, as a user runs it: its own folder, not the working
    # directory, is first on its sys.path; the children are started by it.
    p = subprocess.run([str(BSPUMP_CLUSTER), "run", str(config), "-o", str(tmp_path / "out")],
                       cwd=cwd, capture_output=True, text=True, timeout=180, check=False)
    assert not marker.exists(), p.stderr
    assert p.returncode == 0, p.stderr
