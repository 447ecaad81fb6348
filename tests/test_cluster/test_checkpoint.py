"""The on-disk checkpoint format: complete, incomplete and corrupt folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cluster import checkpoint
from cluster.checkpoint import Checkpoint, ShardReader, ShardWriter


def _write(directory: Path, cp_id: int, workers: int = 2, manifest: bool = True) -> Path:
    folder = checkpoint.create_folder(directory, cp_id)
    files = {}
    for w in range(workers):
        writer = ShardWriter(folder, w)
        writer.put_array("m.M", np.full((3, 4), cp_id * 10 + w, dtype=np.float64))
        writer.put_object("state.A", {"window": [1, 2, w]})
        files.update(writer.close())
    if manifest:
        checkpoint.write_manifest(folder, {"format": checkpoint.FORMAT, "id": cp_id,
                                           "workers": workers, "files": files,
                                           "position": cp_id * 100})
    return folder


def test_round_trip(tmp_path: Path) -> None:
    folder = _write(tmp_path, 1)
    cp = checkpoint.verify(Checkpoint(1, folder))
    assert cp.complete, cp.problem
    r = ShardReader(folder, 1)
    np.testing.assert_array_equal(r.get_array("m.M"), np.full((3, 4), 11.0))
    assert r.get_object("state.A") == {"window": [1, 2, 1]}
    assert r.get_array("absent") is None
    assert (folder / "w0.m.M.npy").stat().st_mode & 0o777 == 0o600
    assert not list(folder.glob("*.tmp"))


def test_newest_complete_skips_unfinished_and_corrupt(tmp_path: Path, caplog) -> None:
    _write(tmp_path, 1)
    _write(tmp_path, 2)
    corrupt = _write(tmp_path, 3)
    unfinished = _write(tmp_path, 4, manifest=False)  # a write killed before its manifest
    data = (corrupt / "w1.m.M.npy").read_bytes()
    (corrupt / "w1.m.M.npy").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size
    with caplog.at_level("WARNING"):
        cp = checkpoint.newest_complete(tmp_path)
    assert cp is not None and cp.id == 2
    assert f"skipping checkpoint {unfinished}: no manifest" in caplog.text
    assert f"skipping checkpoint {corrupt}: w1.m.M.npy fails its checksum" in caplog.text


def test_truncated_and_missing_files_are_incomplete(tmp_path: Path) -> None:
    a = _write(tmp_path, 1)
    (a / "w0.state.msgpack").write_bytes((a / "w0.state.msgpack").read_bytes()[:-2])
    assert "w0.state.msgpack has" in str(checkpoint.verify(Checkpoint(1, a)).problem)
    b = _write(tmp_path, 2)
    (b / "w1.m.M.npy").unlink()
    assert checkpoint.verify(Checkpoint(2, b)).problem == "w1.m.M.npy is missing"
    c = _write(tmp_path, 3)
    (c / checkpoint.MANIFEST).write_text("{not json")
    assert "manifest unreadable" in str(checkpoint.verify(Checkpoint(3, c)).problem)
    m = json.loads((a / checkpoint.MANIFEST).read_text())
    m["format"] = 99
    (a / checkpoint.MANIFEST).write_text(json.dumps(m))
    assert "unknown format" in str(checkpoint.verify(Checkpoint(1, a)).problem)
    assert checkpoint.newest_complete(tmp_path) is None


def test_prune_keeps_the_newest_complete(tmp_path: Path) -> None:
    for i in range(1, 6):
        _write(tmp_path, i)
    _write(tmp_path, 6, manifest=False)
    checkpoint.prune(tmp_path, keep=2, newest_id=5)
    assert [c.id for c in checkpoint.scan(tmp_path)] == [4, 5, 6]  # 6 may still be in progress
    assert checkpoint.next_id(tmp_path) == 7
