"""A Kafka message value and an event: decoded by the record rule, encoded for the sink.

Both ends speak ``json`` (the default) or ``msgpack`` (``value_format``).
"""

from __future__ import annotations

from typing import Any

import msgpack

from bspump.records import Limits, decode_json, decode_msgpack
from bspump.resultfiles import dumps

FORMATS = ("json", "msgpack")


def decode_value(value: bytes | None, fmt: str, limits: Limits) -> dict[str, Any]:
    """A message value as an event (the one record rule), or RecordError saying why not."""
    raw = value or b""
    return decode_msgpack(raw, limits) if fmt == "msgpack" else decode_json(raw, limits)


def encode_value(event: Any, fmt: str) -> bytes:
    """An event (or a merged row) as a message value in ``fmt``."""
    if fmt == "msgpack":
        value: bytes = msgpack.packb(event, use_bin_type=True, default=str)
        return value
    return dumps(event).encode()
