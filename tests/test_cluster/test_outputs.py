"""Result files cannot be turned against the user: owner-only, never through a link."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import bspump
from bspump.file import FileJSONLinesSink
from cluster.config import Config
from cluster.errors import OutputError
from cluster.outputs import RunOutputs, atomic_write_bytes
from coordinator import web

PRECIOUS = "a file of the user's that a run must never touch\n"


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    # The usual umask leaves files world-readable unless the writer asks otherwise.
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _precious(tmp_path: Path) -> Path:
    target = tmp_path / "precious.txt"
    target.write_text(PRECIOUS)
    return target


def test_result_files_are_created_owner_only(tmp_path: Path) -> None:
    outputs = RunOutputs(tmp_path / "out", "P")
    outputs.dead_letter("bad", {"user_id": "u1"})
    outputs.late({"user_id": "u2"}, 1.0, 2.0)
    outputs.windows("A").write({"key": "u3"})
    outputs.write_summary({"n": 1})
    outputs.close()
    web.write_report({"n": 1}, tmp_path / "out" / "report.html")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["P.A.windows.jsonl", "dead-letters.jsonl", "late-events.jsonl",
                     "report.html", "summary.json"]
    assert {f: _mode(tmp_path / "out" / f) for f in files} == dict.fromkeys(files, 0o600)


def test_a_configured_mode_is_applied_even_to_an_older_file(tmp_path: Path) -> None:
    old = tmp_path / "dead-letters.jsonl"
    old.write_text("")
    old.chmod(0o666)
    outputs = RunOutputs(tmp_path, "P", mode=0o640)
    outputs.dead_letter("bad", "x")
    outputs.close()
    assert _mode(old) == 0o640


def test_a_link_at_a_result_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = _precious(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "dead-letters.jsonl").symlink_to(target)
    outputs = RunOutputs(out, "P")
    link = out / "dead-letters.jsonl"
    with pytest.raises(OutputError, match=re.escape(f"{link}: is a symbolic link")):
        outputs.dead_letter("bad", "x")
    assert target.read_text() == PRECIOUS


def test_restore_cuts_each_result_file_to_its_checkpointed_length(tmp_path: Path) -> None:
    # What was written after the checkpoint is written again by the replay: kept, it
    # would appear twice. Files the checkpoint does not know are newer: removed.
    outputs = RunOutputs(tmp_path, "P")
    rows = [{"n": i} for i in range(6)]
    for row in rows[:2]:
        outputs.windows("A").write(row)
        outputs.dead_letter("bad", f"x{row['n']}")
    lengths = outputs.lengths()
    for row in rows[2:]:
        outputs.windows("A").write(row)
        outputs.dead_letter("bad", f"x{row['n']}")
    outputs.sessions("B").write({"late": True})
    outputs.close()
    outputs.truncate_to(lengths)
    windows = tmp_path / "P.A.windows.jsonl"
    assert [json.loads(x) for x in windows.read_text().splitlines()] == rows[:2]
    dead = (tmp_path / "dead-letters.jsonl").read_text().splitlines()
    assert [json.loads(x)["record"] for x in dead] == ["x0", "x1"]
    assert not (tmp_path / "P.B.sessions.jsonl").exists()


def test_restore_does_not_truncate_through_a_link(tmp_path: Path) -> None:
    target = _precious(tmp_path)
    other = tmp_path / "other.txt"
    other.write_text(PRECIOUS)
    out = tmp_path / "out"
    out.mkdir()
    (out / "P.A.windows.jsonl").symlink_to(target)
    (out / "P.B.sessions.jsonl").symlink_to(other)  # newer than the checkpoint: dropped
    outputs = RunOutputs(out, "P")
    with pytest.raises(OutputError, match=re.escape("P.A.windows.jsonl: is a symbolic link")):
        outputs.truncate_to({"P.A.windows.jsonl": 5})
    assert target.read_text() == PRECIOUS
    assert other.read_text() == PRECIOUS


class _Hung(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hung


def test_a_fifo_at_a_result_path_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "late-events.jsonl")
    outputs = RunOutputs(tmp_path, "P")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(5)
    try:
        with pytest.raises(OutputError, match=re.escape("late-events.jsonl: not a regular file")):
            outputs.late({"a": 1}, 1.0, 2.0)
    except _Hung:
        raise AssertionError("opening a FIFO at a result path blocked") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_whole_files_replace_a_link_and_ignore_a_planted_temp_name(tmp_path: Path) -> None:
    target = _precious(tmp_path)
    decoy = tmp_path / "decoy.txt"
    decoy.write_text(PRECIOUS)
    path = tmp_path / "summary.json"
    path.symlink_to(target)
    (tmp_path / f".summary.json.tmp.{os.getpid()}").symlink_to(decoy)
    atomic_write_bytes(path, b"{}")
    assert not path.is_symlink() and path.read_bytes() == b"{}"
    assert _mode(path) == 0o600
    assert target.read_text() == PRECIOUS and decoy.read_text() == PRECIOUS


def _sink(tmp_path: Path, config: str = "") -> tuple[FileJSONLinesSink, Path]:
    run = bspump.RunInfo(role="shard", run_id="t", worker=0, workers=1,
                         output_dir=tmp_path / "out")
    app = bspump.Application(Config.from_string(config), run=run)
    pipeline = bspump.Pipeline(app, "P")
    sink = FileJSONLinesSink(app, pipeline, path="events.jsonl")
    pipeline.build(bspump.Source(app, pipeline), sink)
    (tmp_path / "out").mkdir(parents=True)
    return sink, tmp_path / "out" / "events.w0.jsonl"


def test_sink_file_is_owner_only_or_as_configured(tmp_path: Path) -> None:
    sink, path = _sink(tmp_path)
    sink.write({}, {"user_id": "u1"})
    sink.close()
    assert _mode(path) == 0o600
    assert [json.loads(x) for x in path.read_text().splitlines()] == [{"user_id": "u1"}]
    sink, path = _sink(tmp_path / "b", "[cluster]\nfile_mode = 0640\n")
    sink.write({}, {"user_id": "u1"})
    sink.close()
    assert _mode(path) == 0o640


def test_sink_neither_writes_nor_truncates_through_a_link(tmp_path: Path) -> None:
    target = _precious(tmp_path)
    sink, path = _sink(tmp_path)
    path.symlink_to(target)
    with pytest.raises(OutputError, match=re.escape("events.w0.jsonl: is a symbolic link")):
        sink.set_state({"length": 3})
    with pytest.raises(OutputError, match=re.escape("events.w0.jsonl: is a symbolic link")):
        sink.write({}, {"user_id": "u1"})
    assert target.read_text() == PRECIOUS
