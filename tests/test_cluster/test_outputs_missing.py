"""The end-of-run check that result files are on disk as the run wrote them."""

from __future__ import annotations

import shutil
from pathlib import Path

from cluster.outputs import RunOutputs


def test_files_on_disk_as_written_pass(tmp_path: Path) -> None:
    out = RunOutputs(tmp_path / "out", "P")
    out.windows("A").write({"k": 1})
    out.dead_letter("bad", "x")
    out.close()
    assert out.missing() == []
    assert set(out.sizes()) == {"P.A.windows.jsonl", "dead-letters.jsonl"}


def test_a_deleted_output_folder_is_named(tmp_path: Path) -> None:
    out = RunOutputs(tmp_path / "out", "P")
    out.windows("A").write({"k": 1})
    out.flush()
    shutil.rmtree(tmp_path / "out")
    out.windows("A").write({"k": 2})  # still appends, to a file no longer in any folder
    out.close()
    problems = out.missing()
    assert len(problems) == 1
    assert "P.A.windows.jsonl is not on disk" in problems[0]


def test_a_file_cut_after_the_run_wrote_it_is_named(tmp_path: Path) -> None:
    out = RunOutputs(tmp_path / "out", "P")
    out.late({"k": 1}, 5.0, 10.0)
    out.close()
    path = tmp_path / "out" / "late-events.jsonl"
    path.write_text("")
    assert any("has 0 bytes, the run wrote" in p for p in out.missing())
