"""Offsets are committed only after the checkpoint that holds them is complete.

A separate admin client samples the consumer group's committed offsets throughout a
run with frequent checkpoints and a kill -9 of the coordinator, and each sample is
compared with the source position of the newest complete manifest on disk at that
moment: a committed offset past it would let a restarted group skip events that no
checkpoint holds (silent loss). An early commit (before the manifest) fails this test
within the first few checkpoints.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from cluster import checkpoint
from tests.conftest import ROOT, descendants, remove_run_leftovers
from tests.kafka.broker import KafkaBroker
from tests.kafka.test_pipeline import lines, setup  # noqa: F401  (fixtures)

pytestmark = pytest.mark.kafka


async def _sample(bootstrap: str, group: str, proc: subprocess.Popen[str], cp_dir: Path,
                  kill_after: int) -> tuple[int, list[str], bool]:
    """Sample until the run ends; (samples compared, violations, coordinator killed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    compared, violations, killed = 0, [], False
    try:
        while proc.poll() is None:
            try:
                committed = await admin.list_consumer_group_offsets(group)
            except KafkaError:  # the group has no coordinator yet (before its first join)
                await asyncio.sleep(0.05)
                continue
            # Read the manifests after the offsets: a correct commit is then never ahead.
            manifests = checkpoint.complete_manifests(cp_dir, 1)
            offsets = {f"{tp.topic}:{tp.partition}": meta.offset
                       for tp, meta in committed.items() if meta.offset >= 0}
            if manifests and offsets:
                position = manifests[0].position or {}
                compared += 1
                for name, offset in offsets.items():
                    if offset > int(position.get(name, 0)):
                        violations.append(f"{name} committed at {offset}, newest complete "
                                          f"checkpoint {manifests[0].id} holds "
                                          f"{position.get(name)}")
                if compared == kill_after and not killed:
                    coordinator = [p for p, c in descendants(proc.pid).items()
                                   if "-m coordinator" in c]
                    if coordinator:
                        os.kill(coordinator[0], signal.SIGKILL)
                        killed = True
            await asyncio.sleep(0.01)
    finally:
        await admin.close()
    return compared, violations, killed


def test_committed_offsets_never_pass_the_newest_complete_checkpoint(
        setup, kafka_broker: KafkaBroker) -> None:  # noqa: F811
    config, topic, out = setup
    cfg = config()
    cfg.write_text(cfg.read_text().replace("checkpoint_events = 3000",
                                           "checkpoint_events = 1000\ncheckpoint_interval = 0.2"))
    proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(cfg), "-o", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    began = time.monotonic()
    try:
        compared, violations, killed = asyncio.run(
            _sample(kafka_broker.bootstrap, f"g-{topic}", proc, out / "checkpoints",
                    kill_after=5))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            remove_run_leftovers(proc.pid)
    assert not violations, violations[:5]
    assert compared >= 10, f"only {compared} samples saw a commit and a checkpoint together"
    assert killed, "the coordinator was never killed"
    assert proc.returncode == 0, err
    assert "coordinator" in err and "died: killed by SIGKILL; restarting" in err
    assert time.monotonic() - began < 120
