"""The Kafka source never commits by itself: offsets are committed only after a checkpoint.

aiokafka's consumer auto-commits by default every 5 s; the source and a partition-task
member must build theirs with it off, or the group could move past events no checkpoint
holds. These tests build the consumer the real code builds (without a broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import bspump
from bspump import kafka
from cluster.config import Config

CONFIG = """
[connection:KafkaConnection]
bootstrap_servers = 127.0.0.1:1

[pipeline:P:KafkaSource]
topic = events
"""


class _Built(Exception):
    pass


def _consumer_of(source: kafka.KafkaSource, monkeypatch: pytest.MonkeyPatch) -> Any:
    built: list[Any] = []

    async def capture(make: Any, servers: str) -> Any:
        built.append(make())
        raise _Built

    # Where the source looks it up: bspump/kafka/source.py.
    monkeypatch.setattr(kafka.source, "start_consumer", capture)

    async def start() -> None:
        try:
            await source._start_consumer()
        except _Built:
            pass

    asyncio.run(start())
    return built[0]


@pytest.mark.parametrize("partition", [None, "events:2"])
def test_the_source_consumer_never_auto_commits(partition: str | None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run = bspump.RunInfo(role="coordinator", run_id="t", partition=partition)
    app = bspump.Application(Config.from_string(CONFIG), run=run)
    source = kafka.KafkaSource(app, bspump.Pipeline(app, "P"))
    consumer = _consumer_of(source, monkeypatch)
    assert consumer._enable_auto_commit is False
    assert source.group_options()["enable_auto_commit"] is False


def test_a_config_cannot_turn_auto_commit_on() -> None:
    app = bspump.Application(Config.from_string(CONFIG + "enable_auto_commit = yes\n"))
    with pytest.raises(Exception, match="enable_auto_commit"):
        kafka.KafkaSource(app, bspump.Pipeline(app, "P"))
