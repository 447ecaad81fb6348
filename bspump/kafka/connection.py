"""The connection to the Kafka brokers: ``[connection:NAME]``, client options, retries.

A source and a sink name their connection (``connection="KafkaConnection"``); its
section holds ``bootstrap_servers`` and optionally ``client_id`` and
``request_timeout_ms``. A broker that does not answer is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bspump.errors import ConfigError

if TYPE_CHECKING:
    from bspump.application import Application

log = logging.getLogger("bspump-cluster.kafka")

CONNECTION_KEYS = ("bootstrap_servers", "client_id", "request_timeout_ms")
MAX_BACKOFF = 10.0
PROBE_TIMEOUT = 2.0


def connection_settings(app: Application, connection: str) -> dict[str, str]:
    """The ``[connection:NAME]`` section, checked."""
    section = f"connection:{connection}"
    cfg = app.Config
    if not cfg.has_section(section):
        raise ConfigError(f"{cfg.name}: missing section [{section}] (bootstrap_servers)")
    cfg.check_keys(section, CONNECTION_KEYS)
    servers = cfg.get(section, "bootstrap_servers")
    if not servers:
        raise cfg.error(section, "bootstrap_servers", "missing key (host:port,...)")
    return {k: v.value for k, v in cfg.section(section).items()}


def client_options(settings: dict[str, str]) -> dict[str, Any]:
    """aiokafka client arguments from a ``[connection:NAME]`` section."""
    options: dict[str, Any] = {"bootstrap_servers": settings["bootstrap_servers"]}
    if "client_id" in settings:
        options["client_id"] = settings["client_id"]
    if "request_timeout_ms" in settings:
        options["request_timeout_ms"] = int(settings["request_timeout_ms"])
    return options


class Backoff:
    """0.5 s, 1 s, 2 s ... up to MAX_BACKOFF between attempts."""

    def __init__(self) -> None:
        self.delay = 0.5

    async def wait(self) -> None:
        """Sleep the current delay, then double it (up to MAX_BACKOFF)."""
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, MAX_BACKOFF)

    def reset(self) -> None:
        """Back to the shortest delay (the last attempt worked)."""
        self.delay = 0.5


async def start_consumer(make: Callable[[], Any], servers: str) -> Any:
    """Start the consumer ``make()`` builds; while no broker answers, say so and retry."""
    from aiokafka.errors import KafkaError

    backoff = Backoff()
    while True:
        consumer = make()
        try:
            await consumer.start()
            return consumer
        except KafkaError as e:
            await consumer.stop()
            log.warning("cannot reach Kafka at %s (%s); retrying in %.1f s", servers, e,
                        backoff.delay, extra={"event": "kafka_unreachable", "servers": servers,
                                              "error": str(e), "retry_s": backoff.delay})
        except asyncio.CancelledError:
            await consumer.stop()  # stopped while waiting for the brokers
            raise
        await backoff.wait()
