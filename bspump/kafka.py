"""Kafka source and sink on aiokafka, configured from ``[connection:ID]``.

``[connection:KafkaConnection] bootstrap_servers = host:port,...`` names the
brokers; the processor's own section names topics, group and formats.

The source runs in the coordinator: it reads as a member of a consumer group, never
commits on its own (offsets are committed after each complete checkpoint), and on
restore seeks every partition it is assigned to the checkpoint's offset. The sink
runs on every worker: it sends with ``acks=all`` and waits for the brokers before a
checkpoint completes, so nothing is lost (events after the last checkpoint may be
sent twice after a crash). A broker that is down or goes away is retried with backoff
and a message naming it; the run goes on when it is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from bspump.processor import Sink, Source, SourceBatch
from cluster.errors import ConfigError
from cluster.outputs import dumps

if TYPE_CHECKING:
    from bspump.application import Application
    from bspump.pipeline import Pipeline

log = logging.getLogger("bspump-cluster.kafka")

CONNECTION_KEYS = ("bootstrap_servers", "client_id", "request_timeout_ms")
_FORMATS = ("json", "msgpack")
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
    options: dict[str, Any] = {"bootstrap_servers": settings["bootstrap_servers"]}
    if "client_id" in settings:
        options["client_id"] = settings["client_id"]
    if "request_timeout_ms" in settings:
        options["request_timeout_ms"] = int(settings["request_timeout_ms"])
    return options


def _decoder(fmt: str) -> Any:
    if fmt == "msgpack":
        return lambda b: msgpack.unpackb(b, raw=False, strict_map_key=False)
    return json.loads


def _tp_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class Backoff:
    """0.5 s, 1 s, 2 s ... up to MAX_BACKOFF between attempts."""

    def __init__(self) -> None:
        self.delay = 0.5

    async def wait(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, MAX_BACKOFF)

    def reset(self) -> None:
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
                        backoff.delay)
        except asyncio.CancelledError:
            await consumer.stop()  # stopped while waiting for the brokers
            raise
        await backoff.wait()


class KafkaSource(Source):
    """Consumes ``topic`` (comma-separated topics) as part of consumer group ``group_id``.

    Values are JSON or msgpack objects (``value_format``). ``key_field`` copies the
    record key into the event under that name when the event lacks it (so the
    producer's key can be the shard key). With ``stop_at_end`` the source ends once
    it has read up to the end offsets of its partitions (finite runs, tests).
    """

    ConfigDefaults: dict[str, Any] = {
        "topic": "",
        "group_id": "bspump-cluster",
        "auto_offset_reset": "earliest",
        "value_format": "json",
        "key_field": "",
        "batch": 1000,
        "poll_timeout_ms": 200,
        "stop_at_end": False,
        "session_timeout_ms": 10000,
        "heartbeat_interval_ms": 3000,
    }

    def __init__(self, app: Application, pipeline: Pipeline, connection: str = "KafkaConnection",
                 id: str | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        self.connection = connection
        self.topics = [t.strip() for t in str(self.Config["topic"]).split(",") if t.strip()]
        self.positions: dict[str, int] = {}
        self._consumer: Any = None
        self._started = False
        self._seek_to: dict[str, int] = {}

    @property
    def supports_raw(self) -> bool:  # type: ignore[override]
        """JSON values without key_field can go to the workers undecoded."""
        return self.Config["value_format"] == "json" and not self.Config["key_field"]

    @property
    def partition(self) -> tuple[str, int] | None:
        """The one partition a partition task reads (it does not join the group), or None."""
        run = self.App.Run
        if run is None or run.partition is None:
            return None
        topic, _, number = run.partition.rpartition(":")
        return topic, int(number)

    def group_options(self) -> dict[str, Any]:
        """Consumer-group settings shared by this source and a partition-task member."""
        return {"group_id": self.Config["group_id"], "enable_auto_commit": False,
                "auto_offset_reset": self.Config["auto_offset_reset"],
                "session_timeout_ms": int(self.Config["session_timeout_ms"]),
                "heartbeat_interval_ms": int(self.Config["heartbeat_interval_ms"])}

    def check(self) -> None:
        """Connection, topic and format must be set when this source really runs."""
        connection_settings(self.App, self.connection)
        if not self.topics:
            raise self.config_error("topic", "a Kafka source needs a topic")
        own = self.partition
        if own is not None and own[0] not in self.topics:
            raise self.config_error("topic", f"partition {own[0]}:{own[1]} is not of the "
                                    f"topics this source reads ({', '.join(self.topics)})")
        if self.Config["value_format"] not in _FORMATS:
            raise self.config_error("value_format", f"expected json or msgpack, got "
                                    f"{self.Config['value_format']!r}")

    @property
    def connection_config(self) -> dict[str, str]:
        """``[connection:NAME]`` as a dict."""
        return connection_settings(self.App, self.connection)

    def seek(self, position: Any) -> None:
        """Resume from ``{"topic:partition": next offset}`` on every partition assigned."""
        self._seek_to = {str(k): int(v) for k, v in dict(position or {}).items()}
        self.positions.update(self._seek_to)

    def _on_assigned(self, assigned: Any) -> None:
        names = sorted(_tp_name(tp.topic, tp.partition) for tp in assigned)
        log.info("Kafka assigned %s", ", ".join(names) or "no partitions")
        for tp in assigned:
            offset = self._seek_to.get(_tp_name(tp.topic, tp.partition))
            if offset is not None:
                self._consumer.seek(tp, offset)

    async def _start_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.abc import ConsumerRebalanceListener

        source = self

        class _Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            async def on_partitions_assigned(self, assigned: Any) -> None:
                source._on_assigned(assigned)

        settings = self.connection_config
        own = self.partition

        def make() -> Any:
            consumer = AIOKafkaConsumer(**client_options(settings), **self.group_options(),
                                        max_poll_records=int(self.Config["batch"]))
            if own is None:
                consumer.subscribe(self.topics, listener=_Listener())
            else:
                # A partition task: the host's member holds the group membership.
                consumer.assign([TopicPartition(*own)])
            self._consumer = consumer
            return consumer

        consumer = await start_consumer(make, settings["bootstrap_servers"])
        self._started = True
        if own is not None:
            self._on_assigned(consumer.assignment())
        return consumer

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Poll the brokers; each batch carries the next offset of every partition."""
        from aiokafka.errors import KafkaError

        c = self.Config
        consumer = await self._start_consumer()
        decode = _decoder(c["value_format"])
        limit = self.max_record_bytes
        key_field = c["key_field"]
        backoff = Backoff()
        try:
            while True:
                try:
                    polled = await consumer.getmany(timeout_ms=int(c["poll_timeout_ms"]),
                                                    max_records=int(c["batch"]))
                    backoff.reset()
                except KafkaError as e:
                    log.warning("Kafka read failed (%s); retrying in %.1f s", e, backoff.delay)
                    await backoff.wait()
                    continue
                records: list[Any] = []
                dead: list[tuple[Any, str]] = []
                if self.want_raw:
                    batch = self._raw_batch(polled, limit)
                    if len(batch) or batch.dead:
                        yield batch
                    if c["stop_at_end"] and not polled and await self._at_end(consumer):
                        return
                    continue
                for tp, messages in polled.items():
                    for m in messages:
                        where = f"{tp.topic}:{tp.partition}@{m.offset}"
                        value = m.value or b""
                        self.positions[_tp_name(tp.topic, tp.partition)] = m.offset + 1
                        if len(value) > limit:
                            dead.append((value[:512].decode("utf-8", "replace"),
                                         f"{where}: record of {len(value)} bytes exceeds "
                                         f"max_record_bytes={limit}"))
                            continue
                        try:
                            obj = decode(value)
                        except Exception as e:
                            dead.append((value[:512].decode("utf-8", "replace"),
                                         f"{where}: cannot decode {c['value_format']}: {e}"))
                            continue
                        if not isinstance(obj, dict):
                            dead.append((obj, f"{where}: not an object"))
                            continue
                        if key_field and key_field not in obj and m.key is not None:
                            obj[key_field] = m.key.decode("utf-8", "replace")
                        records.append(obj)
                if records or dead:
                    yield SourceBatch(records, dead, dict(self.positions))
                if c["stop_at_end"] and not polled and await self._at_end(consumer):
                    return
        finally:
            await consumer.stop()
            self._consumer = None
            self._started = False

    def _raw_batch(self, polled: dict[Any, list[Any]], limit: int) -> SourceBatch:
        """Values undecoded (the coordinator decodes only the routing fields)."""
        raw: list[bytes] = []
        places: list[str] = []
        dead: list[tuple[Any, str]] = []
        for tp, messages in polled.items():
            name = _tp_name(tp.topic, tp.partition)
            for m in messages:
                value = m.value or b""
                if len(value) > limit:
                    dead.append((value[:512].decode("utf-8", "replace"),
                                 f"{name}@{m.offset}: record of {len(value)} bytes exceeds "
                                 f"max_record_bytes={limit}"))
                else:
                    raw.append(value)
                    places.append(f"{name}@{m.offset}")
            if messages:
                self.positions[name] = messages[-1].offset + 1
        return SourceBatch([], dead, dict(self.positions), raw=raw, raw_places=places)

    async def _at_end(self, consumer: Any) -> bool:
        assigned = consumer.assignment()
        if not assigned:
            return False
        ends = await consumer.end_offsets(list(assigned))
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def lag(self) -> dict[str, int]:
        """Messages between this source's position and the end of each assigned partition."""
        consumer = self._consumer
        if consumer is None:
            return {}
        assigned = list(consumer.assignment())
        if not assigned:
            return {}
        ends = await consumer.end_offsets(assigned)
        lag = {}
        for tp, end in ends.items():
            name = _tp_name(tp.topic, tp.partition)
            lag[name] = max(0, int(end) - self.positions.get(name, int(end)))
        return lag

    async def probe(self, timeout: float = PROBE_TIMEOUT) -> str | None:
        """None when the brokers answer a metadata request within ``timeout``, else why not.

        A frozen or unreachable broker does not make polling fail (it returns nothing),
        so the coordinator asks this every few seconds to tell the user.
        """
        from aiokafka.errors import KafkaError

        consumer = self._consumer
        if consumer is None or not self._started:
            return None  # still starting: start_consumer says when no broker answers
        try:
            await asyncio.wait_for(consumer.topics(), timeout)
        except TimeoutError:
            return f"no answer within {timeout:.0f} s"
        except KafkaError as e:
            return str(e) or type(e).__name__
        return None

    async def commit(self, positions: Mapping[str, int]) -> None:
        """Commit offsets of a complete checkpoint (for partitions still assigned)."""
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError
        from aiokafka.structs import OffsetAndMetadata

        consumer = self._consumer
        if consumer is None or self.partition is not None:
            return  # a partition task's member commits what its checkpoints hold
        assigned = consumer.assignment()
        offsets = {}
        for name, offset in positions.items():
            topic, _, part = name.rpartition(":")
            tp = TopicPartition(topic, int(part))
            if tp in assigned:
                offsets[tp] = OffsetAndMetadata(int(offset), "")
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as e:
            # The checkpoint holds the offsets; a later commit catches up.
            log.warning("Kafka offsets not committed this time (%s)", e)

    async def close(self) -> None:
        """Stop the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


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
        if self.Config["value_format"] not in _FORMATS:
            raise self.config_error("value_format", f"expected json or msgpack, got "
                                    f"{self.Config['value_format']!r}")

    @property
    def connection_config(self) -> dict[str, str]:
        """``[connection:NAME]`` as a dict."""
        return connection_settings(self.App, self.connection)

    def _encode(self, event: Any) -> tuple[bytes | None, bytes]:
        if self.Config["value_format"] == "msgpack":
            value = msgpack.packb(event, use_bin_type=True, default=str)
        else:
            value = dumps(event).encode()
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
                            backoff.delay)
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
