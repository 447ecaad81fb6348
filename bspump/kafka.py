"""Kafka source and sink on aiokafka, configured from ``[connection:ID]``.

``[connection:KafkaConnection] bootstrap_servers = host:port,...`` names the
brokers; the processor's own section names topics, group and formats.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from bspump.processor import Sink, Source, SourceBatch
from cluster.outputs import dumps

if TYPE_CHECKING:
    from bspump.application import Application
    from bspump.pipeline import Pipeline

log = logging.getLogger(__name__)

CONNECTION_KEYS = ("bootstrap_servers", "client_id", "request_timeout_ms")
_FORMATS = ("json", "msgpack")


def connection_settings(app: Application, connection: str) -> dict[str, str]:
    """The ``[connection:NAME]`` section, checked."""
    section = f"connection:{connection}"
    cfg = app.Config
    if not cfg.has_section(section):
        from cluster.errors import ConfigError

        raise ConfigError(f"{cfg.name}: missing section [{section}] (bootstrap_servers)")
    cfg.check_keys(section, CONNECTION_KEYS)
    servers = cfg.get(section, "bootstrap_servers")
    if not servers:
        raise cfg.error(section, "bootstrap_servers", "missing key (host:port,...)")
    return {k: v.value for k, v in cfg.section(section).items()}


def _decoder(fmt: str) -> Any:
    if fmt == "msgpack":
        return lambda b: msgpack.unpackb(b, raw=False, strict_map_key=False)
    return json.loads


class KafkaSource(Source):
    """Consumes ``topic`` (comma-separated topics) as part of consumer group ``group_id``.

    Values are JSON or msgpack objects (``value_format``). With ``stop_at_end`` the
    source ends once it has read up to the end offsets it saw at start (finite runs).
    """

    ConfigDefaults: dict[str, Any] = {
        "topic": "",
        "group_id": "bspump-cluster",
        "auto_offset_reset": "earliest",
        "value_format": "json",
        "batch": 1000,
        "poll_timeout_ms": 200,
        "stop_at_end": False,
    }

    def __init__(self, app: Application, pipeline: Pipeline, connection: str = "KafkaConnection",
                 id: str | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        self.connection = connection
        self.topics = [t.strip() for t in str(self.Config["topic"]).split(",") if t.strip()]
        self.positions: dict[str, int] = {}
        self._consumer: Any = None
        self._seek_to: dict[str, int] | None = None

    def check(self) -> None:
        """Connection, topic and format must be set when this source really runs."""
        connection_settings(self.App, self.connection)
        if not self.topics:
            raise self.config_error("topic", "a Kafka source needs a topic")
        if self.Config["value_format"] not in _FORMATS:
            raise self.config_error("value_format", f"expected json or msgpack, got "
                                    f"{self.Config['value_format']!r}")

    @property
    def connection_config(self) -> dict[str, str]:
        """``[connection:NAME]`` as a dict."""
        return connection_settings(self.App, self.connection)

    def seek(self, position: Any) -> None:
        """Resume from ``{"topic:partition": next offset}``."""
        self._seek_to = dict(position or {})

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Poll the brokers; each batch carries the next offset of every partition."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        c = self.Config
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.connection_config["bootstrap_servers"],
            group_id=c["group_id"],
            enable_auto_commit=False,
            auto_offset_reset=c["auto_offset_reset"],
        )
        self._consumer = consumer
        await consumer.start()
        decode = _decoder(c["value_format"])
        limit = self.max_record_bytes
        end_offsets: dict[Any, int] | None = None
        try:
            if self._seek_to:
                for name, offset in self._seek_to.items():
                    topic, _, part = name.rpartition(":")
                    consumer.seek(TopicPartition(topic, int(part)), int(offset))
            while True:
                polled = await consumer.getmany(timeout_ms=int(c["poll_timeout_ms"]),
                                                max_records=int(c["batch"]))
                records: list[Any] = []
                dead: list[tuple[Any, str]] = []
                for tp, messages in polled.items():
                    for m in messages:
                        where = f"{tp.topic}:{tp.partition}@{m.offset}"
                        value = m.value or b""
                        if len(value) > limit:
                            dead.append((value[:512].decode("utf-8", "replace"),
                                         f"{where}: record of {len(value)} bytes exceeds "
                                         f"max_record_bytes={limit}"))
                        else:
                            try:
                                obj = decode(value)
                            except Exception as e:
                                dead.append((value[:512].decode("utf-8", "replace"),
                                             f"{where}: cannot decode: {e}"))
                            else:
                                if isinstance(obj, dict):
                                    records.append(obj)
                                else:
                                    dead.append((obj, f"{where}: not an object"))
                        self.positions[f"{tp.topic}:{tp.partition}"] = m.offset + 1
                if records or dead:
                    yield SourceBatch(records, dead, dict(self.positions))
                if c["stop_at_end"]:
                    assigned = consumer.assignment()
                    if assigned and end_offsets is None:
                        end_offsets = await consumer.end_offsets(list(assigned))
                    if end_offsets is not None:
                        behind = [tp for tp, off in end_offsets.items()
                                  if await consumer.position(tp) < off]
                        if not behind:
                            return
                await asyncio.sleep(0)
        finally:
            await consumer.stop()
            self._consumer = None

    async def commit(self, positions: Mapping[str, int]) -> None:
        """Commit offsets (after a complete checkpoint)."""
        from aiokafka import TopicPartition
        from aiokafka.structs import OffsetAndMetadata

        if self._consumer is None:
            return
        offsets = {}
        for name, offset in positions.items():
            topic, _, part = name.rpartition(":")
            offsets[TopicPartition(topic, int(part))] = OffsetAndMetadata(int(offset), "")
        await self._consumer.commit(offsets)


class KafkaSink(Sink):
    """Produces each event to ``topic`` and waits for the brokers' acknowledgement.

    Runs on every worker; ``key_field`` sets the record key from the event.
    """

    ConfigDefaults: dict[str, Any] = {
        "topic": "",
        "value_format": "json",
        "key_field": "",
        "linger_ms": 5,
    }

    def __init__(self, app: Application, pipeline: Pipeline, connection: str = "KafkaConnection",
                 id: str | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        self.connection = connection
        self.topic = str(self.Config["topic"])
        self._pending: list[tuple[bytes | None, bytes]] = []

    def check(self) -> None:
        """Connection, topic and format must be set when this sink really runs."""
        connection_settings(self.App, self.connection)
        if not self.topic:
            raise self.config_error("topic", "a Kafka sink needs a topic")
        if self.Config["value_format"] not in _FORMATS:
            raise self.config_error("value_format", f"expected json or msgpack, got "
                                    f"{self.Config['value_format']!r}")

    @property
    def connection_config(self) -> dict[str, str]:
        """``[connection:NAME]`` as a dict."""
        return connection_settings(self.App, self.connection)

    def write(self, context: dict[str, Any], event: Any) -> None:
        """Queue one event; :meth:`flush` sends the queue."""
        if self.Config["value_format"] == "msgpack":
            value = msgpack.packb(event, use_bin_type=True, default=str)
        else:
            value = dumps(event).encode()
        kf = self.Config["key_field"]
        key = str(event.get(kf)).encode() if kf and isinstance(event, dict) else None
        self._pending.append((key, value))
        if len(self._pending) >= 10_000:
            self.flush()

    def flush(self) -> None:
        """Send queued events and wait until the brokers acknowledged every one."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        asyncio.run(self._send(pending))

    async def _send(self, pending: list[tuple[bytes | None, bytes]]) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self.connection_config["bootstrap_servers"],
            acks="all", linger_ms=int(self.Config["linger_ms"]), enable_idempotence=True,
        )
        await producer.start()
        try:
            futures = [await producer.send(self.topic, value=v, key=k) for k, v in pending]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
