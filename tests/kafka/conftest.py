"""The session's real Kafka broker (tests/kafka/broker.py), shared by every Kafka test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.kafka.broker import BrokerUnavailable, KafkaBroker


def _in_ci() -> bool:
    """Whether ``$CI`` is set (to anything but an empty, ``0`` or ``false`` value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A running single-node Kafka broker on 127.0.0.1, shared by the session's tests.

    Skips when Java is missing, except under CI (``$CI`` set), where that is a failure.
    """
    broker = KafkaBroker()
    unavailable: str | None = None
    try:
        broker.start()
    except BrokerUnavailable as exc:
        unavailable = exc.reason
    if unavailable is not None:
        if _in_ci():
            pytest.fail(f"Kafka broker unavailable under CI: {unavailable}", pytrace=False)
        pytest.skip(f"Kafka broker unavailable: {unavailable}")
    try:
        yield broker
    finally:
        broker.stop()
