"""KafkaSink: produces events to a topic from every worker, acknowledged by the brokers.

Events are sent in batches and the sink waits for ``acks=all`` before a checkpoint
completes, so nothing is lost; events after the last checkpoint may be sent twice
after a crash. The coordinator also produces merged windows and anomalies through it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bspump.kafka.connection import Backoff, client_options, connection_settings
from bspump.kafka.values import FORMATS, encode_value
from bspump.processor import Sink

if TYPE_CHECKING:
    from bspump.application import Application
    from bspump.pipeline import Pipeline

log = logging.getLogger("bspump-cluster.kafka")


class KafkaSink(Sink):
    """Produces each event to ``topic``; waits for the brokers' acknowledgement (acks=all).

    Runs on every worker. ``key_field`` sets the record key from the event. With
    ``windows_topic``, the coordinator also produces every merged window row there, and
    with ``anomalies_topic`` every anomaly it writes to ``*.anomalies.jsonl``.
    Events are sent in batches: when ``batch`` are queued, at least every ``linger_s``
    seconds of event-time ticks, before every checkpoint, and at the end.
    """

    ConfigDefaults: dict[str, Any] = {
        "topic": "",
        "windows_topic": "",
        "anomalies_topic": "",
        "value_format": "json",
        "key_field": "",
        "batch": 5000,
        "linger_s": 0.5,
    }

    def __init__(self, app: Application, pipeline: Pipeline, connection: str = "KafkaConnection",
                 id: str | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        self.connection = connection
        self.topic = str(self.Config["topic"])
        self.windows_topic = str(self.Config["windows_topic"])
        self.anomalies_topic = str(self.Config["anomalies_topic"])
        self._pending: list[tuple[bytes | None, bytes]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        self._flushed_at = time.monotonic()
        self.sent = 0

    def check(self) -> None:
        """Connection, topic and format must be set when this sink really runs."""
        connection_settings(self.App, self.connection)
        if not self.topic:
            raise self.config_error("topic", "a Kafka sink needs a topic")
        if self.Config["value_format"] not in FORMATS:
            raise self.config_error("value_format", f"expected json or msgpack, got "
                                    f"{self.Config['value_format']!r}")

    @property
    def connection_config(self) -> dict[str, str]:
        """``[connection:NAME]`` as a dict."""
        return connection_settings(self.App, self.connection)

    def _encode(self, event: Any) -> tuple[bytes | None, bytes]:
        value = encode_value(event, self.Config["value_format"])
        kf = self.Config["key_field"]
        key = None
        if kf and isinstance(event, dict) and event.get(kf) is not None:
            key = str(event[kf]).encode()
        return key, value

    def write(self, context: dict[str, Any], event: Any) -> None:
        """Queue one event; a full queue is sent at once."""
        self._pending.append(self._encode(event))
        if len(self._pending) >= int(self.Config["batch"]):
            self.flush()

    def _advance(self, watermark: float) -> None:
        if self._pending and time.monotonic() - self._flushed_at >= float(
                self.Config["linger_s"]):
            self.flush()

    def flush(self) -> None:
        """Send queued events and wait until the brokers acknowledged every one."""
        self._flushed_at = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever,
                                            name="kafka-sink", daemon=True)
            self._thread.start()
        asyncio.run_coroutine_threadsafe(self._send(self.topic, pending), self._loop).result()

    async def _ensure_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        if self._producer is None:
            producer = AIOKafkaProducer(**client_options(self.connection_config), acks="all",
                                        linger_ms=5, enable_idempotence=True)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _send(self, topic: str, pending: list[tuple[bytes | None, bytes]]) -> None:
        from aiokafka.errors import KafkaError

        backoff = Backoff()
        while True:
            try:
                producer = await self._ensure_producer()
                futures = [await producer.send(topic, value=v, key=k) for k, v in pending]
                await asyncio.gather(*futures)
                self.sent += len(pending)
                return
            except KafkaError as e:
                # Resend the whole batch: nothing is lost, some events may arrive twice.
                log.warning("cannot send to Kafka topic %s at %s (%s); retrying in %.1f s",
                            topic, self.connection_config["bootstrap_servers"], e,
                            backoff.delay,
                            extra={"event": "kafka_send_retry", "topic": topic,
                                   "error": str(e), "retry_s": backoff.delay})
                if self._producer is not None:
                    await self._producer.stop()
                    self._producer = None
                await backoff.wait()

    async def publish_windows(self, rows: list[dict[str, Any]]) -> None:
        """Coordinator side: produce merged window rows to ``windows_topic``."""
        await self._publish_rows(self.windows_topic, rows)

    async def publish_anomalies(self, rows: list[dict[str, Any]]) -> None:
        """Coordinator side: produce anomalies to ``anomalies_topic`` (keyed by their key)."""
        await self._publish_rows(self.anomalies_topic, rows)

    async def _publish_rows(self, topic: str, rows: list[dict[str, Any]]) -> None:
        if not topic or not rows:
            return
        payload: list[tuple[bytes | None, bytes]] = [
            (str(r["key"]).encode(), self._encode(r)[1]) for r in rows]
        await self._send(topic, payload)

    def _checkpoint(self, writer: Any) -> None:
        """Every event before the barrier is acknowledged before the checkpoint completes."""
        self.flush()
        super()._checkpoint(writer)

    def get_state(self) -> Any:
        """Nothing to keep: sent events are in Kafka."""
        return None

    def close(self) -> None:
        """Send what is queued, stop the producer and its loop."""
        self.flush()
        loop = self._loop
        if loop is not None:
            if self._producer is not None:
                asyncio.run_coroutine_threadsafe(self._producer.stop(), loop).result()
                self._producer = None
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            loop.close()
            self._loop = None
