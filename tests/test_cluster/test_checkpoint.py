"""The on-disk checkpoint format: complete, incomplete and corrupt folders."""

from __future__ import annotations

import json
import os
import signal
import zlib
from pathlib import Path

import numpy as np
import pytest

from cluster import checkpoint
from cluster import manifest as manifests
from cluster.checkpoint import Checkpoint, ShardReader, ShardWriter
from cluster.errors import CheckpointError


def _write(directory: Path, cp_id: int, workers: int = 2, manifest: bool = True) -> Path:
    folder = checkpoint.create_folder(directory, cp_id)
    files = {}
    for w in range(workers):
        writer = ShardWriter(folder, w)
        writer.put_array("m.M", np.full((3, 4), cp_id * 10 + w, dtype=np.float64))
        writer.put_object("state.A", {"window": [1, 2, w]})
        files.update(writer.close())
    if manifest:
        checkpoint.write_manifest(folder, manifests.decode(_manifest(cp_id, workers, files)))
    return folder


def _manifest(cp_id: int, workers: int, files: dict) -> dict:
    """A manifest as the coordinator writes it."""
    return {"format": checkpoint.FORMAT, "id": cp_id, "created": 1.0e9,
            "pipeline": "P", "workers": workers, "key_groups": 64,
            "position": cp_id * 100,
            "intake": {"watermark": 5.0, "max_time": 6.0, "next_boundary": 60.0},
            "counters": {"records_read": 10, "dead": 1, "late": 0, "sessions_ended": 2,
                         "window_rows": 3, "events_processed": 9},
            "outputs": {"dead-letters.jsonl": 120}, "files": files,
            "partition": None, "owner": "host", "finished": False}


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


def _tamper(folder: Path, change) -> None:
    m = json.loads((folder / checkpoint.MANIFEST).read_text())
    change(m)
    (folder / checkpoint.MANIFEST).write_text(json.dumps(m))


def _entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"size": len(data), "crc32": zlib.crc32(data)}


def test_manifest_naming_files_outside_its_folder_is_skipped(tmp_path: Path, caplog) -> None:
    """Absolute and ``..`` names are refused even when size and checksum match."""
    cps = tmp_path / "checkpoints"
    _write(cps, 1)
    outside = tmp_path / "secret.txt"
    outside.write_text("not a checkpoint file\n")
    sneaky = _write(cps, 2)
    _tamper(sneaky, lambda m: m["files"].update({"../../secret.txt": _entry(outside)}))
    absolute = _write(cps, 3)
    _tamper(absolute, lambda m: m["files"].update({str(outside): _entry(outside)}))
    with caplog.at_level("WARNING"):
        cp = checkpoint.newest_complete(cps)
    assert cp is not None and cp.id == 1
    assert (f"skipping checkpoint {sneaky}: manifest names '../../secret.txt', "
            "not a file of the checkpoint folder") in caplog.text
    assert (f"skipping checkpoint {absolute}: manifest names {str(outside)!r}, "
            "not a file of the checkpoint folder") in caplog.text
    assert [m.id for m in checkpoint.complete_manifests(cps, 5)] == [1]


class _Hung(Exception):
    pass


def _alarm(signum, frame):
    raise _Hung


def test_fifo_or_symlink_in_a_checkpoint_is_skipped_not_read(tmp_path: Path) -> None:
    """Reading a FIFO would block for ever; a symlink may point anywhere."""
    fifo_cp = _write(tmp_path, 1)
    os.mkfifo(fifo_cp / "w0.extra.npy")
    _tamper(fifo_cp, lambda m: m["files"].update({"w0.extra.npy": {"size": 0, "crc32": 0}}))
    link_cp = _write(tmp_path, 2)
    target = tmp_path / "elsewhere.npy"
    (link_cp / "w1.m.M.npy").rename(target)
    (link_cp / "w1.m.M.npy").symlink_to(target)  # same bytes: size and crc32 would match
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(5)
    try:
        fifo = checkpoint.verify(Checkpoint(1, fifo_cp))
        link = checkpoint.verify(Checkpoint(2, link_cp))
        listed = [m.id for m in checkpoint.complete_manifests(tmp_path, 5)]
    except _Hung:
        raise AssertionError("verify blocked on a FIFO named in a manifest") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert fifo.problem == "w0.extra.npy is not a regular file"
    assert link.problem == "w1.m.M.npy is not a regular file"
    assert listed == []


def test_reader_refuses_a_fifo_beside_the_manifest(tmp_path: Path) -> None:
    folder = _write(tmp_path, 1)
    os.mkfifo(folder / "w0.ghost.npy")  # not in the manifest: verify cannot see it
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(5)
    try:
        with pytest.raises(CheckpointError, match=r"w0\.ghost\.npy: not a regular file"):
            ShardReader(folder, 0).get_array("ghost")
    except _Hung:
        raise AssertionError("the reader blocked on a FIFO") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("change, problem", [
    (lambda m: m.pop("outputs"), 'MANIFEST.json: field "outputs" is missing'),
    (lambda m: m.update(files={"w0.state.msgpack": 7}),
     'MANIFEST.json: field "files[\'w0.state.msgpack\']" must be a map, got integer'),
    (lambda m: m["files"]["w0.m.M.npy"].pop("size"),
     'MANIFEST.json: field "files[\'w0.m.M.npy\'].size" is missing'),
    (lambda m: m.update(workers="2"),
     'MANIFEST.json: field "workers" must be an integer, got string'),
    (lambda m: m.update(workers=10**9),
     'MANIFEST.json: field "workers" must be an integer <= 1048576'),
    (lambda m: m["files"].pop("w1.state.msgpack"),
     'MANIFEST.json: field "files" does not list w1.state.msgpack of worker 1'),
    (lambda m: m["intake"].update(watermark="late"),
     'MANIFEST.json: field "intake.watermark" must be a number, got string'),
    (lambda m: m["counters"].pop("dead"), 'MANIFEST.json: field "counters.dead" is missing'),
    (lambda m: m.update(outputs={"../x.jsonl": 3}),
     'MANIFEST.json: field "outputs" names \'../x.jsonl\', not a result file'),
    (lambda m: m.update(outputs={"dead-letters.jsonl": -1}),
     'MANIFEST.json: field "outputs[\'dead-letters.jsonl\']" must be an integer >= 0'),
    (lambda m: m.update(files=[]), 'MANIFEST.json: field "files" must be a map, got list'),
    # Read by a restore or by status, and not checked before the manifest was typed:
    (lambda m: m["counters"].update(routed="12"),
     'MANIFEST.json: field "counters.routed" must be an integer or null, got string'),
    (lambda m: m.update(owner=["h"]),
     'MANIFEST.json: field "owner" must be a string or null, got list'),
    (lambda m: m.update(created="yesterday"),
     'MANIFEST.json: field "created" must be a number or null, got string'),
    (lambda m: m["intake"].update(jumps=[]),
     'MANIFEST.json: field "intake.jumps" must be a map or null, got list'),
], ids=["no outputs", "meta not object", "no size", "workers text", "workers huge",
        "worker file unlisted", "watermark text", "counter missing", "output path",
        "negative length", "files list", "routed text", "owner list", "created text",
        "jumps list"])
def test_malformed_manifest_is_skipped_not_fatal(tmp_path: Path, caplog, change,
                                                 problem) -> None:
    _write(tmp_path, 1)
    bad = _write(tmp_path, 2)
    _tamper(bad, change)
    with caplog.at_level("WARNING"):
        cp = checkpoint.newest_complete(tmp_path)
    assert cp is not None and cp.id == 1
    assert f"skipping checkpoint {bad}: {problem}" in caplog.text
    assert [m.id for m in checkpoint.complete_manifests(tmp_path, 5)] == [1]
