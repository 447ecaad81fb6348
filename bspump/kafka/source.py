"""KafkaSource: reads topics as a member of a consumer group, in the coordinator.

It never commits on its own: offsets are committed after each complete checkpoint
(:meth:`KafkaSource.commit`), and on restore every partition it is assigned is sought
to the checkpoint's offset. A partition task reads its one partition without joining
the group (the host's member holds the membership).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from bspump.errors import RecordError
from bspump.kafka.connection import (
    PROBE_TIMEOUT,
    Backoff,
    client_options,
    connection_settings,
    start_consumer,
)
from bspump.kafka.partition import offset_place, parse_partition, partition_name
from bspump.kafka.values import FORMATS, decode_value
from bspump.processor import Source, SourceBatch
from bspump.records import Limits, preview, too_large

if TYPE_CHECKING:
    from bspump.application import Application
    from bspump.pipeline import Pipeline

log = logging.getLogger("bspump-cluster.kafka")


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
        return parse_partition(run.partition)

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
        if self.Config["value_format"] not in FORMATS:
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
        names = sorted(partition_name(tp.topic, tp.partition) for tp in assigned)
        listed = ", ".join(names) or "no partitions"
        log.info("Kafka assigned %s", listed,
                 extra={"event": "kafka_assigned", "partitions": listed})
        for tp in assigned:
            offset = self._seek_to.get(partition_name(tp.topic, tp.partition))
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
        fmt = c["value_format"]
        limits = self.record_limits
        key_field = c["key_field"]
        backoff = Backoff()
        try:
            while True:
                try:
                    polled = await consumer.getmany(timeout_ms=int(c["poll_timeout_ms"]),
                                                    max_records=int(c["batch"]))
                    backoff.reset()
                except KafkaError as e:
                    log.warning("Kafka read failed (%s); retrying in %.1f s", e, backoff.delay,
                                extra={"event": "kafka_read_retry", "error": str(e),
                                       "retry_s": backoff.delay})
                    await backoff.wait()
                    continue
                records: list[Any] = []
                places: list[str] = []
                dead: list[tuple[Any, str]] = []
                if self.want_raw:
                    batch = self._raw_batch(polled, limits)
                    if len(batch) or batch.dead:
                        yield batch
                    if c["stop_at_end"] and not polled and await self._at_end(consumer):
                        return
                    continue
                for tp, messages in polled.items():
                    for m in messages:
                        where = offset_place(tp.topic, tp.partition, m.offset)
                        self.positions[partition_name(tp.topic, tp.partition)] = m.offset + 1
                        try:
                            obj = decode_value(m.value, fmt, limits)
                        except RecordError as e:
                            dead.append((preview(m.value or b""), f"{where}: {e}"))
                            continue
                        if key_field and key_field not in obj and m.key is not None:
                            obj[key_field] = m.key.decode("utf-8", "replace")
                        records.append(obj)
                        places.append(where)
                if records or dead:
                    yield SourceBatch(records, dead, dict(self.positions), raw_places=places)
                if c["stop_at_end"] and not polled and await self._at_end(consumer):
                    return
        finally:
            await consumer.stop()
            self._consumer = None
            self._started = False

    def _raw_batch(self, polled: dict[Any, list[Any]], limits: Limits) -> SourceBatch:
        """Values undecoded (the coordinator decodes only the routing fields, and judges
        each record by the same rule)."""
        raw: list[bytes] = []
        places: list[str] = []
        dead: list[tuple[Any, str]] = []
        for tp, messages in polled.items():
            name = partition_name(tp.topic, tp.partition)
            for m in messages:
                value = m.value or b""
                where = offset_place(tp.topic, tp.partition, m.offset)
                if len(value) > limits.max_bytes:
                    dead.append((preview(value), f"{where}: {too_large(len(value), limits)}"))
                else:
                    raw.append(value)
                    places.append(where)
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
            name = partition_name(tp.topic, tp.partition)
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
            tp = TopicPartition(*parse_partition(name))
            if tp in assigned:
                offsets[tp] = OffsetAndMetadata(int(offset), "")
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as e:
            # The checkpoint holds the offsets; a later commit catches up.
            log.warning("Kafka offsets not committed this time (%s)", e,
                        extra={"event": "commit_failed", "error": str(e)})

    async def close(self) -> None:
        """Stop the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
