"""A partition task never writes over checkpoints another host wrote after it started."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import checkpoint
from cluster import manifest as manifests
from cluster.config import Config, load_cluster_settings
from cluster.errors import ClusterError
from coordinator.runtime import Coordinator


def _coordinator(seed_config, tmp_path: Path, partition: str | None) -> Coordinator:
    cfg = seed_config(['{"user_id": "u1", "timestamp": 1}'])
    settings = load_cluster_settings(Config.load(cfg), cfg, workers=1,
                                     output_dir=str(tmp_path / "out"), partition=partition)
    return Coordinator(settings, "fence.test", 1)


def _write(cp_dir: Path, cp_id: int, owner: str) -> None:
    folder = checkpoint.create_folder(cp_dir, cp_id)
    checkpoint.write_manifest(folder, manifests.decode({
        "format": checkpoint.FORMAT, "id": cp_id, "owner": owner, "position": None,
        "pipeline": "P", "workers": 1, "key_groups": 4, "outputs": {},
        "intake": {"watermark": 0.0, "max_time": 0.0, "next_boundary": 0.0},
        "counters": dict.fromkeys(("records_read", "dead", "late", "sessions_ended",
                                   "window_rows", "events_processed"), 0),
        "files": checkpoint.ShardWriter(folder, 0).close()}))


def test_a_newer_checkpoint_by_another_host_stops_the_task(seed_config, tmp_path: Path) -> None:
    coord = _coordinator(seed_config, tmp_path, "events:0")
    assert coord.checkpoints.dir == tmp_path / "out" / "checkpoints"
    _write(coord.checkpoints.dir, 1, "me:1")
    _write(coord.checkpoints.dir, 2, "me:1")
    coord.checkpoints.next_id = 3  # this task wrote 1 and 2
    coord.checkpoints.check_still_owner()
    _write(coord.checkpoints.dir, 3, "other:7")
    with pytest.raises(ClusterError, match=r"moved to another host.*checkpoint 3.*other:7"):
        coord.checkpoints.check_still_owner()


def test_a_half_written_folder_of_another_host_stops_it_too(seed_config, tmp_path: Path) -> None:
    coord = _coordinator(seed_config, tmp_path, "events:0")
    assert coord.checkpoints.dir is not None
    coord.checkpoints.next_id = 5
    checkpoint.create_folder(coord.checkpoints.dir, 6)
    with pytest.raises(ClusterError, match="checkpoint 6"):
        coord.checkpoints.check_still_owner()


def test_one_host_runs_never_check(seed_config, tmp_path: Path) -> None:
    coord = _coordinator(seed_config, tmp_path, None)
    assert coord.checkpoints.dir is not None
    _write(coord.checkpoints.dir, 9, "other:7")
    coord.checkpoints.check_still_owner()
