"""The real Kafka broker of :mod:`tests.kafka.broker`: topics, produce, consume in a group."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.kafka.broker import BrokerUnavailable, KafkaBroker

pytestmark = pytest.mark.kafka

MESSAGES = 100
PARTITIONS = 3


async def _produce(bootstrap: str, topic: str, payloads: list[dict[str, Any]]) -> set[int]:
    """Send ``payloads`` as JSON with ``acks="all"``; return the partitions they landed on."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        key_serializer=lambda key: key.encode(),
        value_serializer=lambda value: json.dumps(value, sort_keys=True).encode(),
    )
    await producer.start()
    try:
        pending = [
            await producer.send(topic, key=f"key-{payload['seq']}", value=payload)
            for payload in payloads
        ]
        metadata = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return {record.partition for record in metadata}


async def _consume(
    bootstrap: str, topic: str, group: str, expected: int, timeout: float = 60.0
) -> tuple[list[dict[str, Any]], dict[TopicPartition, int]]:
    """Read ``expected`` JSON messages in consumer group ``group``; commit; return them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        value_deserializer=lambda raw: json.loads(raw.decode()),
    )
    await consumer.start()
    try:
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                received.extend(record.value for record in records)
        await consumer.commit()
        committed = {}
        for partition in consumer.assignment():
            offset = await consumer.committed(partition)
            committed[partition] = offset or 0
    finally:
        await consumer.stop()
    return received, committed


def test_broker_answers_on_loopback(kafka_broker: KafkaBroker) -> None:
    """The broker runs, and only ever on 127.0.0.1."""
    assert kafka_broker.running
    assert kafka_broker.bootstrap == f"127.0.0.1:{kafka_broker.port}"
    assert kafka_broker.startup_seconds is not None


def test_produce_and_consume_100_json_messages(kafka_broker: KafkaBroker) -> None:
    """100 JSON messages go through a 3-partition topic and come back whole, via a group."""
    topic = f"roundtrip-{uuid.uuid4().hex[:12]}"
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    payloads = [
        {"seq": seq, "name": f"event-{seq}", "value": seq * 1.5, "tags": ["a", str(seq % 7)]}
        for seq in range(MESSAGES)
    ]

    partitions = asyncio.run(_produce(kafka_broker.bootstrap, topic, payloads))
    received, committed = asyncio.run(
        _consume(kafka_broker.bootstrap, topic, f"group-{topic}", MESSAGES)
    )

    assert partitions == set(range(PARTITIONS)), "the keys should spread over all partitions"
    assert len(received) == MESSAGES
    assert sorted(received, key=lambda payload: payload["seq"]) == payloads
    assert {tp.partition for tp in committed} == set(range(PARTITIONS))
    assert sum(committed.values()) == MESSAGES


def test_missing_java_is_broker_unavailable(tmp_path: Path) -> None:
    """Without a working Java, ``start`` raises ``BrokerUnavailable`` with the reason."""
    broker = KafkaBroker(tmp_path / "cache", java=tmp_path / "no-such-java")
    with pytest.raises(BrokerUnavailable) as info:
        broker.start()
    assert "no-such-java" in info.value.reason
    assert not broker.running
