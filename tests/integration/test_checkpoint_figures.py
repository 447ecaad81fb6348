"""Figures of every checkpoint: how long the stream stood still, what the workers wrote."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.integration.test_lifecycle import ENDLESS, _start, _wait_workers


def test_each_manifest_and_the_summary_carry_the_checkpoint_figures(tmp_path: Path) -> None:
    cfg = tmp_path / "endless.ini"
    cfg.write_text(ENDLESS.replace("workers = 2\n", "workers = 2\ncheckpoint_interval = 0.2\n"))
    out = tmp_path / "out"
    run = _start(cfg, out)
    _wait_workers(run, 2)
    time.sleep(1.5)
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=30)
    manifests = [json.loads(p.read_text())
                 for p in (out / "checkpoints").glob("cp-*/MANIFEST.json")]
    assert manifests
    for m in manifests:
        f = m["figures"]
        assert f["bytes_written"] == sum(meta["size"] for meta in m["files"].values()) > 0
        assert f["state_bytes"] == f["bytes_written"]  # every checkpoint is whole, for now
        assert 0 < f["worker_write_s"] <= f["barrier_to_acks_s"]
    last = json.loads((out / "summary.json").read_text())["last_checkpoint"]
    assert last["stall_s"] >= last["worker_write_s"] > 0
    assert last["bytes"] == last["state_bytes"] > 0
