"""Kafka source and sink on aiokafka, configured from ``[connection:ID]``.

``[connection:KafkaConnection] bootstrap_servers = host:port,...`` names the
brokers (:mod:`bspump.kafka.connection`); the processor's own section names topics,
group and formats.

The source (:mod:`bspump.kafka.source`) runs in the coordinator: it reads as a member
of a consumer group, never commits on its own (offsets are committed after each
complete checkpoint), and on restore seeks every partition it is assigned to the
checkpoint's offset. The sink (:mod:`bspump.kafka.sink`) runs on every worker: it
sends with ``acks=all`` and waits for the brokers before a checkpoint completes, so
nothing is lost (events after the last checkpoint may be sent twice after a crash). A
broker that is down or goes away is retried with backoff and a message naming it; the
run goes on when it is back. Partitions are named ``topic:N``
(:mod:`bspump.kafka.partition`); values are JSON or msgpack (:mod:`bspump.kafka.values`).
"""

from bspump.kafka.connection import (
    CONNECTION_KEYS,
    MAX_BACKOFF,
    PROBE_TIMEOUT,
    Backoff,
    client_options,
    connection_settings,
    start_consumer,
)
from bspump.kafka.partition import offset_place, parse_partition, partition_name
from bspump.kafka.sink import KafkaSink
from bspump.kafka.source import KafkaSource
from bspump.kafka.values import FORMATS, decode_value, encode_value

__all__ = [
    "CONNECTION_KEYS",
    "FORMATS",
    "MAX_BACKOFF",
    "PROBE_TIMEOUT",
    "Backoff",
    "KafkaSink",
    "KafkaSource",
    "client_options",
    "connection_settings",
    "decode_value",
    "encode_value",
    "offset_place",
    "parse_partition",
    "partition_name",
    "start_consumer",
]
