"""Operator mistakes refused before anything is touched: a second run on the same folders,
a taken HTTP port, another config's results; per-run folders of dead runs are removed."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
from pathlib import Path

from cluster import exits
from tests.conftest import ROOT, cli, make_lines
from tests.integration.test_lifecycle import ENDLESS, _start, _wait_workers


def _results(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()
            and not p.name.startswith(".")}


def test_a_second_run_on_the_same_folder_is_refused_at_once_with_the_first_ones_pid(
        tmp_path: Path) -> None:
    cfg = tmp_path / "endless.ini"
    cfg.write_text(ENDLESS)
    out = tmp_path / "out"
    first = _start(cfg, out)
    try:
        _wait_workers(first, 2)
        began = time.monotonic()
        second = cli("run", str(cfg), "-o", str(out), timeout=30)
        took = time.monotonic() - began
        assert second.returncode == exits.REFUSED, second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert "in use by another run" in second.stderr
        assert "Traceback" not in second.stderr
        assert took < 10
        assert first.poll() is None, "the first run must go on"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 128 + signal.SIGTERM


def test_a_taken_http_port_refuses_the_run_and_leaves_the_previous_results(
        seed_config, tmp_path: Path) -> None:
    cfg = seed_config(make_lines(3000))
    out = tmp_path / "out"
    done = cli("run", str(cfg), "-o", str(out), "--workers", "1")
    assert done.returncode == 0, done.stderr
    before = _results(out)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        text = cfg.read_text().replace("[cluster]\n", f"[cluster]\nhttp = 127.0.0.1:{port}\n")
        cfg.write_text(text)
        p = cli("run", str(cfg), "-o", str(out), "--workers", "1")
    assert p.returncode == exits.REFUSED, p.stderr
    assert f"cannot serve http on 127.0.0.1:{port}" in p.stderr
    assert "[cluster] http" in p.stderr
    assert "Traceback" not in p.stderr
    assert _results(out) == before


def test_results_of_another_pipeline_are_not_overwritten(seed_config, tmp_path: Path) -> None:
    cfg = seed_config(make_lines(2000))
    out = tmp_path / "out"
    assert cli("run", str(cfg), "-o", str(out), "--workers", "1").returncode == 0
    before = _results(out)
    other = tmp_path / "other.ini"
    other.write_text(ENDLESS)
    p = cli("run", str(other), "-o", str(out), "--workers", "1")
    assert p.returncode == exits.REFUSED, p.stderr
    assert "holds the results of pipeline SeedPipeline" in p.stderr
    assert str(cfg.resolve()) in p.stderr
    assert _results(out) == before
    # Another config of the same pipeline (here: a copy) continues the same job.
    copy = tmp_path / "copy.ini"
    copy.write_text(cfg.read_text())
    assert cli("run", str(copy), "-o", str(out), "--workers", "2").returncode == 0


def test_an_unwritable_output_folder_is_refused_naming_it(seed_config, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocked = tmp_path / "file-not-folder"
        blocked.write_text("x")
        out = blocked / "out"
    else:
        out = tmp_path / "ro" / "out"
        (tmp_path / "ro").mkdir(mode=0o500)
    cfg = seed_config(make_lines(100))
    p = cli("run", str(cfg), "-o", str(out), "--workers", "1")
    assert p.returncode == exits.REFUSED, p.stderr
    assert f"cannot write in {out}" in p.stderr
    assert "Traceback" not in p.stderr


def test_the_run_folder_of_a_killed_run_is_removed_by_the_next_run(
        seed_config, tmp_path: Path) -> None:
    cfg = tmp_path / "endless.ini"
    cfg.write_text(ENDLESS)
    victim = _start(cfg, tmp_path / "out1")
    _wait_workers(victim, 2)
    mine = [p for p in Path(tempfile.gettempdir()).glob(f"bspump-cluster-{victim.pid}.*")]
    assert len(mine) == 1 and mine[0].is_dir()
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)
    assert mine[0].exists(), "a kill -9 leaves the folder (nothing runs to remove it)"
    p = cli("run", str(seed_config(make_lines(200))), "-o", str(tmp_path / "out2"),
            "--workers", "1")
    assert p.returncode == 0, p.stderr
    assert not mine[0].exists()
    assert "run folders left by earlier runs" in p.stderr


def test_exit_codes_are_one_table_and_the_docs_show_it() -> None:
    doc = (ROOT / "docs" / "recovery.md").read_text()
    for code, meaning in exits.MEANING.items():
        assert exits.outcome(code) == meaning
        assert f"| {code} | {meaning}" in doc, f"docs/recovery.md's exit code table lacks {code}"
    assert exits.outcome(143) == "stopped by signal 15"
