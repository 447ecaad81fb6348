"""Cutting result files back on restore: truncate_result and RunOutputs.truncate_to."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cluster.errors import OutputError
from cluster.outputs import RunOutputs, truncate_result


def test_truncate_result_cuts_to_the_length_and_never_grows_a_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"0123456789")
    truncate_result(path, 4)
    assert path.read_bytes() == b"0123"
    # A checkpoint that remembers more than is on disk must not pad the file with zeros.
    truncate_result(path, 100)
    assert path.read_bytes() == b"0123"
    truncate_result(path, 0)
    assert path.read_bytes() == b""


def test_truncate_result_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    folder = tmp_path / "d.jsonl"
    folder.mkdir()
    fifo = tmp_path / "f.jsonl"
    os.mkfifo(fifo)
    for path in (folder, fifo):
        with pytest.raises(OutputError, match="not a regular file"):
            truncate_result(path, 0)


def _rows(path: Path) -> list[dict[str, int]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_restored_run_writes_on_after_the_cut_once_and_closes_clean(tmp_path: Path) -> None:
    # The replay after a restore writes rows 2.. again: each must be in the file once,
    # after rows 0..1, and the end-of-run check must measure the file from the cut.
    outputs = RunOutputs(tmp_path, "P")
    for n in range(2):
        outputs.windows("A").write({"n": n})
    lengths = outputs.lengths()
    for n in range(2, 5):
        outputs.windows("A").write({"n": n})
    outputs.truncate_to(lengths)
    for n in range(2, 6):
        outputs.windows("A").write({"n": n})
    outputs.close()
    assert _rows(tmp_path / "P.A.windows.jsonl") == [{"n": n} for n in range(6)]
    assert outputs.missing() == []
    assert outputs.sizes()["P.A.windows.jsonl"] == (tmp_path / "P.A.windows.jsonl").stat().st_size


def test_truncate_to_leaves_other_pipelines_files_alone(tmp_path: Path) -> None:
    other = tmp_path / "Q.A.windows.jsonl"
    other.write_text('{"n": 1}\n')
    outputs = RunOutputs(tmp_path, "P")
    outputs.windows("A").write({"n": 0})
    outputs.truncate_to({})  # a checkpoint before any row: P's rows go, Q's stay
    assert not (tmp_path / "P.A.windows.jsonl").exists()
    assert other.read_text() == '{"n": 1}\n'
