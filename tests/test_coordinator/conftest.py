"""A real coordinator built from a config, and a transport that records what it is sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cluster import wire
from cluster.config import Config, load_cluster_settings
from coordinator.runtime import Coordinator


class RecordingTransport:
    """Keeps every message sent, per worker, as a worker would decode it.

    When ``ack`` is set, a watermark counts as acked and merged by every worker as soon
    as the last worker has been sent it, the way prompt workers would answer: the
    router's flow control then never waits.
    """

    def __init__(self, coord: Coordinator, ack: bool = True) -> None:
        self.coord = coord
        self.workers = coord.workers
        self.ack = ack
        self.sent: list[list[wire.Down]] = [[] for _ in range(self.workers)]

    async def send(self, worker: int, message: wire.Down) -> None:
        msg = wire.unpack_down(wire.pack(message))
        self.sent[worker].append(msg)
        if self.ack and isinstance(msg, wire.Watermark) and worker == self.workers - 1:
            for w in range(self.workers):
                self.coord.merger.merge(self.coord.frontier.ack(w, msg.watermark))

    async def recv(self) -> wire.Up:
        raise AssertionError("the pieces under test do not receive")

    def close(self) -> None:
        pass


@pytest.fixture
def make_coordinator(seed_config: Callable[..., Path],
                     tmp_path: Path) -> Callable[..., Coordinator]:
    """A Coordinator of the seed pipeline over ``lines`` (``cluster``: extra [cluster] keys)."""

    def make(lines: list[str], workers: int = 1, cluster: str = "",
             partition: str | None = None) -> Coordinator:
        cfg = seed_config(lines)
        if cluster:
            cfg.write_text(cfg.read_text().replace("[cluster]\n", f"[cluster]\n{cluster}\n", 1))
        settings = load_cluster_settings(Config.load(cfg), cfg, workers=workers,
                                         output_dir=str(tmp_path / "out"), partition=partition)
        return Coordinator(settings, "unit.test", workers)

    return make
