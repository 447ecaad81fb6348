"""File sources: JSON lines and msgpack streams, and what every file source shares.

A file source reads one file in batches and carries its position (byte offset, line)
in each batch, so a restored run resumes where the checkpoint was. CSV files are read
by :mod:`bspump.file.csvsource`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgpack

from bspump.errors import RecordError
from bspump.processor import Source, SourceBatch
from bspump.records import (
    BOM,
    check_object,
    decode_json,
    line_place,
    preview,
    preview_object,
    too_large,
)

if TYPE_CHECKING:
    from bspump.application import Application
    from bspump.pipeline import Pipeline


def skip_line(f: IO[bytes]) -> int:
    """Read past the rest of an over-long line without holding it; bytes skipped."""
    skipped = 0
    while True:
        more = f.readline(1 << 20)
        skipped += len(more)
        if not more or more.endswith(b"\n"):
            return skipped


def _skip_bom(f: IO[bytes]) -> None:
    """At the start of a file, step over a UTF-8 byte-order mark: it is no part of a record."""
    if f.tell() == 0 and f.read(len(BOM)) != BOM:
        f.seek(0)


# Private to bspump.file: its class name is one of the config sections a piece reads
# ([pipeline:ID:_FileSource]), which a rename would change.
class _FileSource(Source):
    """What every file source shares: ``path``, ``batch``, opening, resuming."""

    ConfigDefaults: dict[str, Any] = {"path": "", "batch": 1000}

    def __init__(self, app: Application, pipeline: Pipeline, id: str | None = None,
                 config: Mapping[str, Any] | None = None, path: str | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        chosen = self.setting("path", path) or self.Config["path"]
        if not chosen:
            raise self.config_error("path", "a file source needs a path")
        self.path = Path(chosen)
        self.batch = int(self.Config["batch"])
        if self.batch < 1:
            raise self.config_error("batch", "must be at least 1")
        self._start_at: Any = None

    def seek(self, position: Any) -> None:
        """Resume after a position a batch carried."""
        self._start_at = position

    def _open(self) -> IO[bytes]:
        try:
            return open(self.path, "rb")
        except OSError as e:
            raise self.config_error("path", f"cannot open {self.path}: {e.strerror}") from None


class FileJSONLinesSource(_FileSource):
    """One JSON object per line. Position: byte offset and line number after a batch.

    Blank lines are not records: they are skipped and not counted. Every other line is
    handed on as a record or as a dead letter (``file:line``, reason, preview).
    """

    supports_raw = True
    RAW_CHUNK = 1 << 20

    def _resume(self, f: IO[bytes]) -> int:
        """Seek to the saved position; the number of lines before it."""
        if self._start_at:
            f.seek(int(self._start_at["offset"]))
        _skip_bom(f)
        return int(self._start_at["line"]) if self._start_at else 0

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Read the file in batches of ``batch`` lines (raw: in chunks of about 1 MiB)."""
        if self.want_raw:
            async for batch in self._raw_batches():
                yield batch
            return
        limits = self.record_limits
        limit = limits.max_bytes
        name = str(self.path)
        with self._open() as f:
            line_no = self._resume(f)
            while True:
                records: list[Any] = []
                numbers: list[int] = []
                dead: list[tuple[Any, str]] = []
                at_end = False
                for _ in range(self.batch):
                    # The newline is not part of the record: read one byte more for it.
                    line = f.readline(limit + 2)
                    if not line:
                        at_end = True
                        break
                    line_no += 1
                    body = line.rstrip(b"\r\n")
                    if len(body) > limit:
                        size = len(line) + (0 if line.endswith(b"\n") else skip_line(f))
                        dead.append((preview(body), f"{line_place(name, line_no)}: "
                                                    f"{too_large(size, limits)}"))
                        continue
                    if not body.strip():
                        continue  # a blank line is no record
                    try:
                        obj = decode_json(body, limits)
                    except RecordError as e:
                        dead.append((preview(body), f"{line_place(name, line_no)}: {e}"))
                        continue
                    records.append(obj)
                    numbers.append(line_no)
                # A batch of blank lines is not the end of the file: only EOF is.
                if records or dead:
                    yield SourceBatch(records, dead, {"offset": f.tell(), "line": line_no},
                                      raw_origin=name, raw_lines=numbers)
                    await asyncio.sleep(0)
                if at_end:
                    return

    async def _raw_batches(self) -> AsyncIterator[SourceBatch]:
        """Whole lines, undecoded: the coordinator decodes only what routing needs."""
        limits = self.record_limits
        limit = limits.max_bytes
        name = str(self.path)
        with self._open() as f:
            line_no = self._resume(f)
            carry = b""
            while True:
                # A read that leaves carry + chunk within the limit holds no line over it:
                # the length check below is then free.
                room = limit - len(carry)
                want = min(self.RAW_CHUNK, room) if room >= min(self.RAW_CHUNK, 1 << 16) \
                    else self.RAW_CHUNK
                chunk = f.read(want)
                fits = len(carry) + len(chunk) <= limit
                if chunk:
                    lines = (carry + chunk).split(b"\n")
                    carry = lines.pop()
                else:
                    lines, carry = ([carry] if carry else []), b""
                dead: list[tuple[Any, str]] = []
                oversize = b""
                if len(carry.rstrip(b"\r")) > limit:
                    # An unfinished line already over the limit: skip to its end.
                    oversize, size = carry, len(carry) + skip_line(f)
                    carry = b""
                first = line_no + 1
                numbers: list[int] | None = None  # only when lines were left out
                # The usual chunk, checked at C speed: nothing to leave out.
                if lines and all(lines) and (fits or max(map(len, lines)) <= limit) \
                        and not any(map(bytes.isspace, lines)):
                    raw = lines
                else:
                    raw, numbers = [], []
                    for i, line in enumerate(lines):
                        if len(line.rstrip(b"\r")) > limit:
                            dead.append((preview(line), f"{line_place(name, first + i)}: "
                                                        f"{too_large(len(line), limits)}"))
                        elif line and not line.isspace():  # a blank line is no record
                            raw.append(line)
                            numbers.append(first + i)
                line_no += len(lines)
                if oversize:
                    line_no += 1
                    dead.append((preview(oversize), f"{line_place(name, line_no)}: "
                                                     f"{too_large(size, limits)}"))
                if raw or dead:
                    position = {"offset": f.tell() - len(carry), "line": line_no}
                    yield SourceBatch([], dead, position, raw=raw, raw_origin=name,
                                      raw_first_line=first, raw_lines=numbers)
                    await asyncio.sleep(0)
                if not chunk:
                    return


class FileMsgpackSource(_FileSource):
    """A stream of msgpack maps, one per record. Position: byte offset."""

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Read records in batches; a corrupt stream ends the file with a dead letter."""
        limits = self.record_limits
        with self._open() as f:
            if self._start_at:
                f.seek(int(self._start_at))
            base = f.tell()
            unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False,
                                        max_buffer_size=max(limits.max_bytes, 1 << 16))
            # Offset after the last whole record: unpacker.tell() moves into a record that
            # turns out to be cut short, so it is neither a resume point nor where it broke.
            pos = base
            done = False
            while not done:
                records: list[Any] = []
                places: list[str] = []
                dead: list[tuple[Any, str]] = []
                for _ in range(self.batch):
                    try:
                        obj = unpacker.unpack()
                    except msgpack.OutOfData:
                        done = True
                        # Bytes left over are a record cut short, not a clean end.
                        left = os.fstat(f.fileno()).st_size - pos
                        if left > 0:
                            dead.append((None, f"{self.path}: truncated msgpack record at byte "
                                               f"{pos} ({left} bytes left)"))
                        break
                    except (ValueError, msgpack.ExtraData, msgpack.FormatError,
                            msgpack.StackError, msgpack.BufferFull) as e:
                        # A stream has no line ends to find the next record by.
                        dead.append((None, f"{self.path}: corrupt msgpack at byte "
                                           f"{pos}, rest of file skipped: "
                                           f"{type(e).__name__}: {e}"))
                        done = True
                        break
                    place = f"{self.path}: record at byte {pos}"
                    try:
                        check_object(obj, limits, "map")
                    except RecordError as e:
                        dead.append((preview_object(obj), f"{place}: {e}"))
                    else:
                        records.append(obj)
                        places.append(place)
                    pos = base + unpacker.tell()
                if records or dead:
                    yield SourceBatch(records, dead, pos, raw_places=places)
                    await asyncio.sleep(0)
