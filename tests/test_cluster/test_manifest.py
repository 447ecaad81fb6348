"""``MANIFEST.json`` as a typed record: version 1 is the shape main has always written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cluster import checkpoint
from cluster import manifest as manifests
from cluster.checkpoint import Checkpoint, ShardWriter
from cluster.errors import ContractError

# Written by the coordinator before manifests were typed (a run of main, stopped after
# its first checkpoint): byte for byte, indent and -Infinity included.
WRITTEN_BEFORE = """{
 "format": 1,
 "id": 1,
 "created": 1796411299.4957855,
 "pipeline": "AggregationPipeline",
 "workers": 2,
 "key_groups": 256,
 "position": null,
 "intake": {
  "watermark": -Infinity,
  "max_time": -Infinity,
  "next_boundary": -Infinity,
  "jumps": {
   "held": "kA==",
   "since": 0,
   "released": 0,
   "refused": 0
  }
 },
 "counters": {
  "records_read": 0,
  "dead": 0,
  "late": 0,
  "sessions_ended": 0,
  "window_rows": 0,
  "events_processed": 0,
  "routed": 0,
  "failed": 0,
  "dead_input": 0
 },
 "outputs": {},
 "files": {
  "w0.tw.HourlyCountAnalyzer.npy": {
   "size": 128,
   "crc32": 2991492006
  },
  "w0.state.msgpack": {
   "size": 164,
   "crc32": 2813691379
  },
  "w1.tw.HourlyCountAnalyzer.npy": {
   "size": 128,
   "crc32": 2991492006
  },
  "w1.state.msgpack": {
   "size": 164,
   "crc32": 2813691379
  }
 },
 "partition": null,
 "owner": "vm",
 "finished": false,
 "figures": {
  "worker_write_s": 0.010768,
  "barrier_to_acks_s": 0.012512,
  "bytes_written": 584,
  "state_bytes": 584
 }
}"""


def test_a_manifest_written_before_decodes_and_encodes_to_the_same_bytes() -> None:
    m = manifests.decode(json.loads(WRITTEN_BEFORE))
    assert m.version == 1 and m.workers == 2 and m.pipeline == "AggregationPipeline"
    assert m.intake.watermark == -np.inf and m.counters.dead_input == 0
    assert m.files["w1.state.msgpack"].crc32 == 2813691379
    assert json.dumps(manifests.encode(m), indent=1) == WRITTEN_BEFORE


def _folder(tmp_path: Path, change=None) -> Path:
    """A checkpoint of two workers whose manifest is ``WRITTEN_BEFORE`` over real files."""
    folder = checkpoint.create_folder(tmp_path, 1)
    files = {}
    for w in range(2):
        writer = ShardWriter(folder, w)
        writer.put_array("m.M", np.arange(4.0) + w)
        files.update(writer.close())
    m = json.loads(WRITTEN_BEFORE)
    m["files"] = {name: {"size": f.size, "crc32": f.crc32} for name, f in files.items()}
    if change is not None:
        change(m)
    (folder / checkpoint.MANIFEST).write_text(json.dumps(m, indent=1))
    return folder


@pytest.mark.parametrize("older", [
    lambda m: None,
    # Before the ledger's counters and the checkpoint figures, and without a partition.
    lambda m: [m["counters"].pop(k) for k in ("routed", "failed", "dead_input")],
    lambda m: m.pop("figures"),
    lambda m: [m.pop(k) for k in ("partition", "owner", "finished")],
    lambda m: m["intake"].pop("jumps"),
], ids=["as written", "no ledger counters", "no figures", "no partition", "no jumps"])
def test_a_version_1_checkpoint_verifies(tmp_path: Path, older) -> None:
    cp = checkpoint.verify(Checkpoint(1, _folder(tmp_path, older)))
    assert cp.complete, cp.problem
    assert cp.manifest is not None and cp.manifest.counters.records_read == 0


def test_a_newer_version_is_refused_by_number(tmp_path: Path) -> None:
    cp = checkpoint.verify(Checkpoint(1, _folder(tmp_path, lambda m: m.update(format=2))))
    assert cp.problem == ('MANIFEST.json: field "format" is 2: unknown format '
                          "(this version reads 1)")


@pytest.mark.parametrize("change, error", [
    (lambda m: m.update(files=[]), 'field "files" must be a map, got list'),
    (lambda m: m.pop("position"), 'field "position" is missing'),
    (lambda m: m["counters"].update(routed="12"),
     'field "counters.routed" must be an integer or null, got string'),
    (lambda m: m["figures"].update(bytes_written=-1),
     'field "figures.bytes_written" must be an integer >= 0'),
    (lambda m: m["files"]["w0.state.msgpack"].update(crc32=1 << 32),
     "field \"files['w0.state.msgpack'].crc32\" must be an integer <= 4294967295"),
    (lambda m: m.update(key_groups=0), 'field "key_groups" must be an integer >= 1'),
], ids=["files list", "no position", "routed text", "negative bytes", "crc32 wide",
        "no key groups"])
def test_a_wrong_shape_is_an_error_naming_the_field(change, error: str) -> None:
    m = json.loads(WRITTEN_BEFORE)
    change(m)
    with pytest.raises(ContractError) as e:
        manifests.decode(m)
    assert str(e.value) == f"MANIFEST.json: {error}"


def test_a_manifest_that_is_not_a_map() -> None:
    with pytest.raises(ContractError, match=r"^MANIFEST\.json: must be a map, got list$"):
        manifests.decode([1, 2])
