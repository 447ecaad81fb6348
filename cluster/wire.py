"""Messages between the coordinator and workers: typed records, msgpack lists on the wire.

Each message is a :class:`msgspec.Struct` encoded as a list tagged by its kind, the
same bytes as before the records were typed: ``[kind, field, field...]``.

Down (coordinator to one worker, one ordered channel per worker, so control is
ordered with data): :class:`Data`, :class:`DataRaw`, :class:`DataCols` (a batch of
events), :class:`Watermark`, :class:`End`, :class:`Stop`, :class:`Barrier`,
:class:`Restore` (the first message when the run resumes).

Up (every worker to the coordinator, one shared channel): :class:`Hello` (carries the
protocol :data:`VERSION`; the coordinator refuses a worker that speaks another),
:class:`Ack`, :class:`Done`, :class:`Output`, :class:`Failed`, :class:`Checkpointed`,
:class:`Restored`, :class:`Heartbeat` (sent after a second without another message; a
worker silent for ``worker_timeout`` is taken for stopped or wedged).

A :class:`ShardReport` carries each analyzer's :class:`AnalyzerNews`, which the
coordinator applies before it merges. A message is checked against its record where it
is decoded (:func:`unpack_down`, :func:`unpack_up`); one of the wrong shape is a
ContractError naming the field: ``ACK: field "seq" must be an integer, got string``.

Encoding is msgpack's (``msgpack.packb``) as it always was: the users' events and
dead letters keep their values exactly, and what msgpack cannot hold becomes its
string. Nothing is pickled: a crafted message cannot run code.
"""

from __future__ import annotations

from typing import Any

import msgpack
import msgspec

from cluster.contract import convert
from cluster.errors import ContractError
from cluster.manifest import FileEntry

DATA = 1
WATERMARK = 2
END = 3
STOP = 4
BARRIER = 5
RESTORE = 6
DATA_RAW = 7
DATA_COLS = 8

HELLO = 10
ACK = 11
DONE = 12
OUTPUT = 13
FAILED = 14
CHECKPOINTED = 15
RESTORED = 16
HEARTBEAT = 17


VERSION = 1  # of the protocol: the coordinator and its workers must speak the same

Number = int | float  # kept as sent: an integer stays one


class _Down(msgspec.Struct, array_like=True, tag_field="kind"):
    """A message from the coordinator to one worker."""


class Data(_Down, tag=DATA):
    """A batch of events and their event times."""

    times: list[Number]
    events: list[Any]


class DataRaw(_Down, tag=DATA_RAW):
    """A batch of events, each an undecoded JSON object (bytes)."""

    times: list[Number]
    lines: list[bytes]


class DataCols(_Down, tag=DATA_COLS):
    """A batch of events as numpy columns (:meth:`bspump.batch.EventBatch.to_wire`):
    the times' bytes and ``[name, dtype, bytes, prefix]`` per column."""

    times: bytes
    columns: list[tuple[str, str, bytes, str | None]]


class Watermark(_Down, tag=WATERMARK):
    """Event time has reached ``watermark``: close what closes, ack with ``seq``."""

    seq: int
    watermark: Number


class End(_Down, tag=END):
    """End of input: close everything, report, exit (a partition task passes a checkpoint
    folder for its final state, else None)."""

    seq: int
    last_time: Number
    folder: str | None


class Stop(_Down, tag=STOP):
    """Stop now without a final report."""


class Barrier(_Down, tag=BARRIER):
    """Write the shard's state into ``folder`` and ack it."""

    checkpoint_id: int
    folder: str


class Restore(_Down, tag=RESTORE):
    """Load this shard's part of the checkpoint in ``folder``, written by ``old_workers``."""

    folder: str
    old_workers: int


class AnalyzerNews(msgspec.Struct, omit_defaults=True):
    """One analyzer's news since its last report (only what happened is sent).

    A TimeWindowAnalyzer's: ``keys`` given rows (in row order), ``closed`` ``(period,
    slot)``, ``rows`` ``(row, key)`` reused for new keys, ``segment`` ``(name, shape,
    dtype)`` its ring moved to (the coordinator maps it and removes the previous name);
    a SessionAnalyzer's ``ended`` ``(key, first, last, events)``; a keyed detector's
    ``anomalies`` ``(key, event time, value, mean, std, score)``.
    """

    keys: list[Any] = []
    closed: list[tuple[int, int]] = []
    rows: list[tuple[int, Any]] = []
    segment: tuple[str, list[int], str] | None = None
    ended: list[tuple[Any, Number, Number, int]] = []
    anomalies: list[tuple[Any, Number | None, Number, Number, Number, Number]] = []


class DeadLetter(msgspec.Struct, omit_defaults=True):
    """A record a worker could not process, and why."""

    reason: str
    record: Any = None
    processor: str | None = None
    event_time: Number | None = None


class WriteFigures(msgspec.Struct):
    """How long a worker stood still writing its state for a checkpoint, and the bytes."""

    write_s: Number
    bytes: int


class ShardReport(msgspec.Struct, omit_defaults=True):
    """A worker's news: analyzers', dead letters, counters (None: not in this report)."""

    analyzers: dict[str, AnalyzerNews] = {}
    dead: list[DeadLetter] = []
    events_in: int | None = None
    events_out: int | None = None
    events_batched: int = 0
    events_failed: int = 0
    open_sessions: int | None = None
    checkpoint: WriteFigures | None = None


class _Up(msgspec.Struct, array_like=True, tag_field="kind"):
    """A message from a worker to the coordinator; each names its worker first."""

    worker: int


class Hello(_Up, tag=HELLO):
    """Booted: the pid, every shared array (logical name -> [segment, shape, dtype]) and
    the protocol version spoken."""

    pid: int
    segments: dict[str, tuple[str, list[int], str]]
    version: int


class Ack(_Up, tag=ACK):
    """Done with everything before ``seq`` (-1: only dead letters that piled up)."""

    seq: int
    watermark: Number | None
    report: ShardReport


class Done(_Up, tag=DONE):
    """End of input processed; ``files``: the final state's checkpoint files, or None."""

    seq: int
    report: ShardReport
    files: dict[str, FileEntry] | None


class Output(_Up, tag=OUTPUT):
    """Whole lines the worker's analyzers printed."""

    text: str


class Failed(_Up, tag=FAILED):
    """The worker cannot go on."""

    message: str


class Checkpointed(_Up, tag=CHECKPOINTED):
    """State written for checkpoint ``checkpoint_id``: every file's size and crc32."""

    checkpoint_id: int
    files: dict[str, FileEntry]
    report: ShardReport


class Restored(_Up, tag=RESTORED):
    """Checkpoint loaded."""

    report: ShardReport


class Heartbeat(_Up, tag=HEARTBEAT):
    """Alive; ``events``: events taken in so far."""

    events: int


Down = Data | DataRaw | DataCols | Watermark | End | Stop | Barrier | Restore
Up = Hello | Ack | Done | Output | Failed | Checkpointed | Restored | Heartbeat

_DOWN_NAMES = {DATA: "DATA", DATA_RAW: "DATA_RAW", DATA_COLS: "DATA_COLS",
               WATERMARK: "WATERMARK", END: "END", STOP: "STOP", BARRIER: "BARRIER",
               RESTORE: "RESTORE"}
_UP_NAMES = {HELLO: "HELLO", ACK: "ACK", DONE: "DONE", OUTPUT: "OUTPUT", FAILED: "FAILED",
             CHECKPOINTED: "CHECKPOINTED", RESTORED: "RESTORED", HEARTBEAT: "HEARTBEAT"}


def _as_list(obj: msgspec.Struct) -> Any:
    """A record as msgpack writes it: a message as ``[kind, fields...]``, a map-like
    record as a map without the fields left at their defaults. Shallow: msgpack packs
    the values (users' data among them) by its own rules."""
    config = obj.__struct_config__
    if config.array_like:
        return [config.tag, *msgspec.structs.astuple(obj)]
    return {f.encode_name: getattr(obj, f.name) for f in msgspec.structs.fields(obj)
            if not _is_default(getattr(obj, f.name), f)}


def _is_default(value: Any, f: msgspec.structs.FieldInfo) -> bool:
    if f.default is not msgspec.NODEFAULT:
        return bool(value is f.default or value == f.default)
    if f.default_factory is not msgspec.NODEFAULT:
        return bool(value == f.default_factory())
    return False


def _default(obj: Any) -> Any:
    if isinstance(obj, msgspec.Struct):
        return _as_list(obj)
    # numpy scalars and sets show up in user events; anything else becomes its string.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def pack(message: _Down | _Up) -> bytes:
    """Encode one message."""
    return msgpack.packb(message, use_bin_type=True, default=_default)


def _unpack(data: bytes | memoryview, tp: Any, names: dict[int, str]) -> Any:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise ContractError(f"a message that is not msgpack: {e}") from None
    if not isinstance(obj, list) or not obj:
        return convert(obj, tp, "message")  # the error says what it got
    return convert(obj, tp, names.get(obj[0], "message"))


def unpack_down(data: bytes | memoryview) -> Down:
    """Decode a message to a worker; ContractError naming the field when it is malformed."""
    result: Down = _unpack(data, Down, _DOWN_NAMES)
    return result


def unpack_up(data: bytes | memoryview) -> Up:
    """Decode a message from a worker; ContractError naming the field when it is malformed."""
    result: Up = _unpack(data, Up, _UP_NAMES)
    return result
