"""The record rule, as the runtime imports it: defined once in :mod:`bspump.records`.

Sources (bspump) and the coordinator's intake (cluster) judge a record by the same
functions; this module names them for the runtime's modules, and adds nothing.
"""

from bspump.kafka.partition import offset_place, partition_name
from bspump.records import (
    BOM,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    MAX_TIME,
    MIN_TIME,
    PREVIEW_CHARS,
    Limits,
    batch_may_be_too_deep,
    check_object,
    decode_json,
    decode_msgpack,
    depth_exceeds,
    in_time_range,
    json_depth,
    late_record,
    line_place,
    parse_event_time,
    preview,
    preview_object,
    time_out_of_range,
    too_deep,
    too_deep_reason,
    too_large,
)

__all__ = [
    "BOM",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "MAX_TIME",
    "MIN_TIME",
    "PREVIEW_CHARS",
    "Limits",
    "batch_may_be_too_deep",
    "check_object",
    "decode_json",
    "decode_msgpack",
    "depth_exceeds",
    "in_time_range",
    "json_depth",
    "late_record",
    "line_place",
    "offset_place",
    "parse_event_time",
    "partition_name",
    "preview",
    "preview_object",
    "time_out_of_range",
    "too_deep",
    "too_deep_reason",
    "too_large",
]
