"""A worker's settings and shard, on the test pipeline of worker_pipelines.py."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bspump.application import ROLE_SHARD, RunInfo
from cluster import shm
from cluster.config import ClusterSettings, Config, load_cluster_settings
from tests.conftest import ROOT

CONFIG = f"""
[cluster]
pipeline = tests.test_workers.worker_pipelines:WorkerPipeline
python_path = {ROOT}
checkpoint_dir = none

[pipeline:WorkerPipeline]
shard_key = user
time_field = t
"""

T0 = 1767225600.0


def settings_in(folder: Path, workers: int = 1) -> ClusterSettings:
    """The test pipeline's settings, its config written into ``folder``."""
    path = folder / "worker.ini"
    path.write_text(CONFIG)
    return load_cluster_settings(Config.load(path), path, workers=workers,
                                 output_dir=str(folder / "out"))


@pytest.fixture
def run_ids() -> Iterator[Callable[[], str]]:
    """Fresh run ids; every shared-memory segment made under them is removed after."""
    made: list[str] = []

    def new() -> str:
        made.append(f"{os.getpid()}.{os.urandom(4).hex()}")
        return made[-1]

    yield new
    for run_id in made:
        shm.unlink_run(run_id)


def shard_run(run_id: str, worker: int = 0, workers: int = 1,
              out: Path = Path("out")) -> RunInfo:
    """What the supervisor tells worker ``worker`` of ``workers``."""
    return RunInfo(role=ROLE_SHARD, run_id=run_id, worker=worker, workers=workers,
                   output_dir=out, event_time=True, ring_span=120.0, key_groups=256)
