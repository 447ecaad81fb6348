"""A checkpoint's ``MANIFEST.json``: what a restore reads, as a typed record.

Version 1 (the ``"format"`` key, there since the first checkpoints) is the shape below;
a manifest of another version is refused with its number. Fields added later are
optional (``counters.routed``, ``figures``...), so a version-1 manifest written before
them still restores; fields this code does not know are ignored.

A manifest is untrusted data (anyone who can write the checkpoint folder wrote it):
:func:`decode` checks every type and bound, then what types cannot say (each name is a
plain file name of the folder, every worker's state file is listed). Its errors name
the field: ``MANIFEST.json: field "files" must be a map, got list``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from cluster.contract import convert
from cluster.errors import ContractError

FORMAT = 1
MANIFEST = "MANIFEST.json"
MAX_WORKERS = 1 << 20  # as many as there can be key groups

_Count = Annotated[int, msgspec.Meta(ge=0)]
_Positive = Annotated[int, msgspec.Meta(ge=1, le=MAX_WORKERS)]
Number = int | float  # kept as written: an integer stays one


class FileEntry(msgspec.Struct, frozen=True):
    """One file of a checkpoint: its size in bytes and crc32."""

    size: _Count
    crc32: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]


class IntakeState(msgspec.Struct, omit_defaults=True):
    """The intake's event-time bookkeeping (:meth:`cluster.intake.Intake.state`)."""

    watermark: Number
    max_time: Number
    next_boundary: Number
    jumps: dict[str, Any] | None = None  # held records (cluster.jumps); absent: none

    def as_dict(self) -> dict[str, Any]:
        """What :meth:`cluster.intake.Intake.set_state` takes."""
        return msgspec.structs.asdict(self)


class Counters(msgspec.Struct, omit_defaults=True):
    """The run's counts at the checkpoint; the last three came later (None: not written)."""

    records_read: _Count
    dead: _Count
    late: _Count
    sessions_ended: _Count
    window_rows: _Count
    events_processed: _Count
    routed: _Count | None = None
    failed: _Count | None = None
    dead_input: _Count | None = None


class CheckpointFigures(msgspec.Struct):
    """How the checkpoint went: the slowest worker's write, barrier to acks, bytes."""

    worker_write_s: Number
    barrier_to_acks_s: Number
    bytes_written: _Count
    state_bytes: _Count


class Manifest(msgspec.Struct, kw_only=True):
    """``MANIFEST.json``, version 1: the source position, counters, every file's size/crc32."""

    version: int = msgspec.field(default=FORMAT, name="format")
    id: int | None = None
    created: Number | None = None
    pipeline: str
    workers: _Positive
    key_groups: _Positive
    position: Any  # the source's own (an offset, offsets by partition...); null: the start
    intake: IntakeState
    counters: Counters
    outputs: dict[str, _Count]  # result file -> synced length
    files: dict[str, FileEntry]
    partition: str | None = None
    owner: str | None = None
    finished: bool = False
    # Only a checkpoint taken at a barrier has them (not a partition's final one).
    figures: CheckpointFigures | UnsetType = UNSET


def is_plain_name(name: str) -> bool:
    """A file name directly inside a folder: no separator, not ``.``/``..``, not absolute."""
    return (name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name)


def decode(obj: Any) -> Manifest:
    """A manifest from its decoded JSON; ContractError naming the field when it is wrong."""
    if isinstance(obj, dict) and "format" in obj and obj["format"] != FORMAT:
        raise ContractError(f'{MANIFEST}: field "format" is {obj["format"]!r}: unknown format '
                            f"(this version reads {FORMAT})")
    m = convert(obj, Manifest, MANIFEST)
    for name in m.files:
        if not is_plain_name(name):
            raise ContractError(f"manifest names {name!r}, not a file of the checkpoint "
                                "folder")
    for w in range(m.workers):
        if f"w{w}.state.msgpack" not in m.files:
            raise ContractError(f'{MANIFEST}: field "files" does not list w{w}.state.msgpack '
                                f"of worker {w}")
    for name in m.outputs:
        if not is_plain_name(name):
            raise ContractError(f'{MANIFEST}: field "outputs" names {name!r}, not a result '
                                "file")
    return m


def encode(m: Manifest) -> dict[str, Any]:
    """JSON-ready: the keys, in the order, version 1 has always written."""
    result: dict[str, Any] = msgspec.to_builtins(m)
    return result
