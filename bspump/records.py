"""What makes an input record usable: one rule for every source and every route.

A record is usable when it is at most ``max_record_bytes`` long, decodes (UTF-8 JSON or
msgpack) to an object, nests at most ``max_record_depth`` levels, and has a shard key
and an event time the intake can route by (:func:`parse_event_time`; the runtime
reads the shard key). A record that breaks any of these costs that record alone: it
becomes a dead letter naming its place (:func:`line_place`, or
:func:`bspump.kafka.partition.offset_place`), the reason, and a :func:`preview` of at
most :data:`PREVIEW_CHARS` characters.

Blank lines are not records: sources skip them and never count them.

Nesting is checked on the bytes, before a decoder recurses into them (Python's
``json``, msgspec and msgpack all recurse, and a record a thousand levels deep would
raise ``RecursionError`` out of the process). :func:`batch_may_be_too_deep` bounds a
whole batch with one counting pass, so the raw path pays for an exact scan only when a
batch holds a record with many brackets.
"""

from __future__ import annotations

import json
import re
import reprlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgpack
import msgspec
import numpy as np

from bspump.errors import RecordError

PREVIEW_CHARS = 512
DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 64
BOM = b"\xef\xbb\xbf"

# Event times outside this range are almost surely a unit mistake (ms, ns): refuse them
# instead of pushing the watermark to the year 50,000 and making every later record late.
MIN_TIME = 0.0
MAX_TIME = 32503680000.0  # 3000-01-01


@dataclass(frozen=True)
class Limits:
    """How large and how deeply nested a record may be (``[cluster] max_record_*``)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH


# -- where a record came from, and what a dead letter shows of it ---------------------------


def line_place(origin: str, line: int) -> str:
    """``file:line`` of a record read from a file or stdin."""
    return f"{origin}:{line}"


def preview(raw: bytes | str) -> str:
    """The first :data:`PREVIEW_CHARS` characters of a raw record, and its size if cut."""
    if isinstance(raw, str):
        return raw if len(raw) <= PREVIEW_CHARS else \
            f"{raw[:PREVIEW_CHARS]}... ({len(raw)} characters)"
    raw = bytes(raw).rstrip(b"\r\n")
    # Decode a little more than needed: a character may take up to 4 bytes.
    text = raw[: 4 * PREVIEW_CHARS].decode("utf-8", "replace")
    if len(text) <= PREVIEW_CHARS and len(raw) <= 4 * PREVIEW_CHARS:
        return text
    return f"{text[:PREVIEW_CHARS]}... ({len(raw)} bytes)"


_REPR = reprlib.Repr()
_REPR.maxlevel = 8
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = 32
_REPR.maxstring = _REPR.maxother = PREVIEW_CHARS


def preview_object(obj: Any) -> str:
    """A decoded record too deep (or too odd) to write as JSON, as bounded text."""
    return preview(_REPR.repr(obj))


def late_record(raw: bytes) -> Any:
    """A raw record that arrived late, decoded for ``late-events.jsonl``; its preview when
    a field routing skipped does not decode (the record is late all the same)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return preview(raw)


def too_large(size: int, limits: Limits) -> str:
    """The reason for a record over ``max_record_bytes``."""
    return f"record of {size} bytes exceeds max_record_bytes={limits.max_bytes}"


# -- nesting depth, on the bytes ------------------------------------------------------------

_OPEN = frozenset(b"[{")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """How deeply the JSON text ``raw`` nests (``{}`` is 1), brackets in strings aside.

    Malformed text still gets a number (an unclosed bracket counts as open): the decoder
    judges it afterwards.
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def too_deep(raw: bytes, limits: Limits) -> bool:
    """Whether one JSON record nests deeper than ``max_record_depth``."""
    # Opening brackets bound the depth from above: counting is cheap, scanning is not.
    if raw.count(b"{") + raw.count(b"[") <= limits.max_depth:
        return False
    return json_depth(raw) > limits.max_depth


def batch_may_be_too_deep(joined: bytes, records: int, limits: Limits) -> bool:
    """Whether a batch of ``records`` JSON objects joined as ``[a,b,...]`` may hold one
    deeper than ``max_record_depth`` (False: certainly none is).

    Each object opens at least one bracket of its own, so no record opens more than the
    batch's brackets beyond one per record. Only valid when every record is an object:
    callers decode the batch as such and fall back to :func:`too_deep` per record.
    """
    # numpy counts a byte about three times as fast as bytes.count; most batches hold no
    # array at all, and find() says so at memchr speed.
    codes = np.frombuffer(joined, dtype=np.uint8)
    opens = int(np.count_nonzero(codes == ord("{")))
    if joined.find(b"[", 1) >= 0:
        opens += int(np.count_nonzero(codes == ord("["))) - 1
    return opens - (records - 1) > limits.max_depth


def depth_exceeds(obj: Any, max_depth: int) -> bool:
    """Whether a decoded value nests deeper than ``max_depth`` (a msgpack map, a dict a
    source built). Walks containers only, without recursion."""
    if not isinstance(obj, (dict, list, tuple)):
        return False
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            return True
        for v in (value.values() if isinstance(value, dict) else value):
            if isinstance(v, (dict, list, tuple)):
                stack.append((v, depth + 1))
    return False


def too_deep_reason(limits: Limits) -> str:
    """The reason for a record nested deeper than ``max_record_depth``."""
    return f"record nests deeper than max_record_depth={limits.max_depth}"


# -- decoding one record ----------------------------------------------------------------------


_json_decode = msgspec.json.Decoder().decode


def decode_json(raw: bytes, limits: Limits) -> dict:
    """One JSON object from ``raw``, or RecordError saying why it is not usable.

    ``raw`` is one record (a line without its newline, or a message value). The decoder
    is msgspec's, as on the raw route's workers, so a record is usable or not whichever
    route it takes (Python's json would also take ``NaN`` and numbers past a float).
    """
    if raw.startswith(BOM):
        raw = raw[len(BOM):]  # a byte-order mark costs no record
    if len(raw) > limits.max_bytes:
        raise RecordError(too_large(len(raw), limits))
    if too_deep(raw, limits):
        raise RecordError(too_deep_reason(limits))
    try:
        obj = _json_decode(raw)
    except (msgspec.DecodeError, RecursionError) as e:
        raise RecordError(f"malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise RecordError(f"not a JSON object ({type(obj).__name__})")
    return obj


def decode_msgpack(raw: bytes, limits: Limits) -> dict:
    """One msgpack map from ``raw``, or RecordError saying why it is not usable."""
    if len(raw) > limits.max_bytes:
        raise RecordError(too_large(len(raw), limits))
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise RecordError(f"cannot decode msgpack: {type(e).__name__}: {e}") from None
    check_object(obj, limits, "map")
    return obj


def check_object(obj: Any, limits: Limits, kind: str = "JSON object") -> None:
    """RecordError unless ``obj`` is a dict nested at most ``max_record_depth``."""
    if not isinstance(obj, dict):
        raise RecordError(f"not a {kind} ({type(obj).__name__})")
    if depth_exceeds(obj, limits.max_depth):
        raise RecordError(too_deep_reason(limits))


# -- event time ---------------------------------------------------------------------------------


def parse_event_time(value: Any) -> float:
    """Epoch seconds from a number, a numeric string or an ISO-8601 string."""
    if isinstance(value, bool) or value is None:
        raise RecordError(f"event time is {value!r}")
    if isinstance(value, (int, float)):
        try:
            t = float(value)
        except OverflowError:  # a JSON integer of hundreds of digits
            raise RecordError("event time is a number too large for a float") from None
    elif isinstance(value, str):
        try:
            t = float(value)
        except ValueError:
            try:
                dt = datetime.fromisoformat(value)
            except ValueError:
                raise RecordError(f"event time {preview(value)!r} is neither a number nor "
                                  "ISO-8601") from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            t = dt.timestamp()
    else:
        raise RecordError(f"event time has type {type(value).__name__}")
    if not in_time_range(t):
        raise RecordError(time_out_of_range(value))
    return t


def in_time_range(t: Any) -> Any:
    """Whether event time ``t`` (a float, or elementwise for an array) is in 1970..3000.

    NaN is out of range: every comparison with it is false.
    """
    return (t >= MIN_TIME) & (t < MAX_TIME)


def time_out_of_range(value: Any) -> str:
    """The reason for an event time outside 1970..3000."""
    if not isinstance(value, str):
        value = float(value)  # a numpy scalar reads as a plain number
    return f"event time {preview(str(value)) if isinstance(value, str) else value!r} is " \
        "outside 1970..3000 (epoch seconds expected)"
