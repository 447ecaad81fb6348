"""How a Kafka partition is named: ``topic:N``, and a record's place ``topic:N@offset``.

Positions in checkpoints, metrics, partition tasks (``--partition``) and dead letters
all use these names; this module is the one place that writes and parses them.
"""

from __future__ import annotations

from bspump.errors import ConfigError


def partition_name(topic: str, partition: int) -> str:
    """``topic:N``: how a Kafka partition is named in positions and metrics."""
    return f"{topic}:{partition}"


def parse_partition(partition: str) -> tuple[str, int]:
    """``events:3`` -> ``("events", 3)``; ConfigError for anything else."""
    topic, sep, number = partition.rpartition(":")
    if not sep or not topic or not number.isdigit():
        raise ConfigError(f"--partition: expected topic:number, got {partition!r}")
    return topic, int(number)


def offset_place(topic: str, partition: int, offset: int) -> str:
    """``topic:partition@offset`` of a Kafka record."""
    return f"{partition_name(topic, partition)}@{offset}"
