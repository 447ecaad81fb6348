"""File sources and sinks: JSON lines, CSV and msgpack files; a JSON-lines file sink."""

from __future__ import annotations

import asyncio
import codecs
import csv
import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgpack

from bspump.processor import Sink, Source, SourceBatch
from cluster.errors import RecordError
from cluster.outputs import dumps
from cluster.records import (
    BOM,
    Limits,
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

def _skip_line(f: IO[bytes]) -> int:
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


class _FileSource(Source):
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
                        size = len(line) + (0 if line.endswith(b"\n") else _skip_line(f))
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
                    oversize, size = carry, len(carry) + _skip_line(f)
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


# Only plain decimal numbers: int()/float() would also turn "nan", "Inf", "1_000" into numbers.
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _number(text: str) -> Any:
    if not _NUMBER.fullmatch(text):
        return text
    try:
        return int(text)
    except ValueError:
        return float(text)


class _RowTooLarge(Exception):
    """Raised through csv.reader when the row being read passes max_record_bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class _CSVLines:
    """The physical lines of a CSV file for ``csv.reader``, decoded one by one.

    It remembers the lines of the row being parsed, so that a row that breaks (bad
    bytes, too large, a quote never closed) costs that row alone: its first line is
    reported, and the lines after it are read again (:meth:`again`).
    """

    def __init__(self, f: IO[bytes], encoding: str, limit: int) -> None:
        self.f = f
        self.encoding = encoding
        self.limit = limit
        self.line_no = 0
        # (line number, bytes, size when the line was over the limit and cut short)
        self.row: list[tuple[int, bytes, int]] = []
        self.row_bytes = 0
        self.undecodable: str | None = None
        self.ended_in_row = False
        self._again: list[tuple[int, bytes, int]] = []

    def __iter__(self) -> _CSVLines:
        return self

    def __next__(self) -> str:
        if self._again:
            entry = self._again.pop()
        else:
            raw = self.f.readline(self.limit + 2)
            if not raw:
                self.ended_in_row = bool(self.row)  # csv wanted more: a quote is open
                raise StopIteration
            if self.line_no == 0 and raw.startswith(BOM):
                raw = raw[len(BOM):]  # utf-8-sig: a byte-order mark costs nothing
            self.line_no += 1
            cut = 0
            if len(raw.rstrip(b"\r\n")) > self.limit:
                cut = len(raw) + (0 if raw.endswith(b"\n") else _skip_line(self.f))
            entry = (self.line_no, raw, cut)
        self.row.append(entry)
        line_no, raw, cut = entry
        self.row_bytes += cut or len(raw)
        if cut or self.row_bytes > self.limit + len(self.row):
            raise _RowTooLarge(self.row_bytes)
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as e:
            if self.undecodable is None:
                self.undecodable = f"line {line_no} is not valid {self.encoding}: {e.reason} " \
                                   f"at byte {e.start}"
            text = raw.decode(self.encoding, "replace")  # keep csv in step with the lines
        # A last line without a newline still ends its row (csv would ask for more).
        return text if text.endswith("\n") else text + "\n"

    def take_row(self) -> tuple[int, bytes, str | None]:
        """The finished row's first line, bytes and decoding problem; start the next row."""
        first = self.row[0][0] if self.row else self.line_no
        raw = b"".join(r for _, r, _ in self.row)
        bad = self.undecodable
        self.row, self.row_bytes, self.undecodable, self.ended_in_row = [], 0, None, False
        return first, raw, bad

    def again(self) -> None:
        """Read the lines after the broken row's first line again, as new rows."""
        self._again.extend(reversed(self.row[1:]))
        self.row = self.row[:1]


class FileCSVSource(_FileSource):
    """A CSV file with a header row; numeric cells become numbers unless told otherwise.

    Rows are decoded one by one (a UTF-8 byte-order mark is skipped). A row that cannot
    be read (bytes not in ``encoding``, a wrong number of fields, larger than
    ``max_record_bytes``, a quote never closed) is one dead letter naming the line where
    it starts; the rows after it are read as usual. Blank lines are not records.
    Position: the number of rows read.
    """

    ConfigDefaults: dict[str, Any] = {"delimiter": ",", "convert_numbers": True,
                                      "encoding": "utf-8"}

    def _encoding(self) -> str:
        """The configured codec; rows are split on bytes, so it must be ASCII-compatible."""
        raw = str(self.Config["encoding"])
        try:
            name = codecs.lookup(raw).name
        except LookupError:
            raise self.config_error("encoding", f"unknown encoding {raw!r}") from None
        if name == "utf-8-sig":
            name = "utf-8"  # the mark is skipped whatever the encoding
        probe = "\r\n,;\t\"'|ab09"
        try:
            compatible = probe.encode(name) == probe.encode("ascii")
        except UnicodeError:
            compatible = False
        if not compatible:
            raise self.config_error("encoding", f"{raw!r} is not ASCII-compatible; CSV rows "
                                    "are read line by line (utf-8, latin-1, cp1252 ... work)")
        return name

    def _rows(self, f: IO[bytes], limits: Limits,
              width: list[int]) -> Iterator[tuple[int, bytes, Any]]:
        """(first line, bytes, cells) of every row; cells is a str reason for a dead row.

        ``width`` holds the header's number of fields once it is known.
        """
        lines = _CSVLines(f, self._encoding(), limits.max_bytes)
        # Rows are bounded by max_record_bytes here, so csv's own (process-wide) field
        # limit must not be lower, or a long field would break csv's reading.
        if csv.field_size_limit() < limits.max_bytes:
            csv.field_size_limit(limits.max_bytes)
        delimiter = str(self.Config["delimiter"])
        while True:
            reader = csv.reader(lines, delimiter=delimiter)
            try:
                for cells in reader:
                    if lines.ended_in_row:
                        raise csv.Error("a quoted field is never closed")
                    if width and cells and len(cells) != width[0] and len(lines.row) > 1:
                        # A row over several lines with the wrong width: a quote opened and
                        # closed only by a later row's quote. Read the lines after it again.
                        lines.again()
                        first, raw, _ = lines.take_row()
                        yield first, raw, (f"row has {len(cells)} fields, header has "
                                           f"{width[0]}: a quoted field opened on this line "
                                           "is never closed")
                        continue
                    first, raw, bad = lines.take_row()
                    if bad is not None:
                        yield first, raw, bad
                    elif width and cells and len(cells) != width[0]:
                        yield first, raw, f"row has {len(cells)} fields, header has {width[0]}"
                    elif cells:  # a blank line is no record
                        yield first, raw, cells
                if lines.row:  # csv gave up on an open row at the end: never lose it
                    first, raw, _ = lines.take_row()
                    yield first, raw, "a quoted field opened on this line is never closed"
                return
            except (_RowTooLarge, csv.Error) as e:
                spans = len(lines.row) > 1
                if isinstance(e, _RowTooLarge) and not spans:
                    reason = too_large(e.size, limits)
                elif isinstance(e, _RowTooLarge) or lines.ended_in_row:
                    reason = "a quoted field opened on this line is never closed" + (
                        f" within max_record_bytes={limits.max_bytes}"
                        if isinstance(e, _RowTooLarge) else "")
                else:
                    reason = f"unreadable CSV: {e}"
                if spans:
                    lines.again()
                first, raw, _ = lines.take_row()
                yield first, raw, reason

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Read rows in batches; position is the number of rows read (dead ones too)."""
        convert = bool(self.Config["convert_numbers"])
        skip = int(self._start_at or 0)
        limits = self.record_limits
        name = str(self.path)
        with self._open() as f:
            width: list[int] = []
            rows = self._rows(f, limits, width)
            header: list[str] | None = None
            for first, _raw, cells in rows:
                if isinstance(cells, str):
                    raise self.config_error("path", f"{line_place(name, first)}: the header "
                                            f"row is unreadable: {cells}")
                header = cells
                width.append(len(header))
                break
            if header is None:
                return  # an empty file
            row_no = 0
            records: list[Any] = []
            numbers: list[int] = []
            dead: list[tuple[Any, str]] = []
            for first, raw, cells in rows:
                row_no += 1
                if row_no <= skip:
                    continue
                if isinstance(cells, str):
                    dead.append((preview(raw), f"{line_place(name, first)}: {cells}"))
                else:
                    records.append(dict(zip(header, map(_number, cells), strict=True))
                                   if convert else dict(zip(header, cells, strict=True)))
                    numbers.append(first)
                if len(records) + len(dead) >= self.batch:
                    yield SourceBatch(records, dead, row_no, raw_origin=name, raw_lines=numbers)
                    records, numbers, dead = [], [], []
                    await asyncio.sleep(0)
            if records or dead:
                yield SourceBatch(records, dead, row_no, raw_origin=name, raw_lines=numbers)


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


class FileJSONLinesSink(Sink):
    """Writes events as JSON lines to ``path``.

    A relative path is taken inside the run's output folder. On worker ``k`` of a
    cluster run the file is ``<stem>.w<k><suffix>``: one file per worker, never two
    writers on one file.
    """

    ConfigDefaults: dict[str, Any] = {"path": ""}

    def __init__(self, app: Application, pipeline: Pipeline, id: str | None = None,
                 config: Mapping[str, Any] | None = None, path: str | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        chosen = self.setting("path", path) or self.Config["path"]
        if not chosen:
            raise self.config_error("path", "a file sink needs a path")
        self.path = Path(chosen)
        self._file: IO[str] | None = None
        self._resume_at: int | None = None

    def get_state(self) -> Any:
        """How long this worker's file was at the checkpoint (fsynced: the length holds)."""
        self._sync()
        target = self._target()
        return {"length": target.stat().st_size if target.exists() else 0}

    def set_state(self, state: Any) -> None:
        """Resume: lines written after the checkpoint are cut off (they are written again)."""
        self._resume_at = int(state["length"])
        target = self._target()
        if target.exists() or target.is_symlink():
            from cluster.outputs import truncate_result

            truncate_result(target, self._resume_at)  # refuses a link: never cuts its target

    def _target(self) -> Path:
        run = self.App.Run
        if run is None:
            return self.path
        path = self.path if self.path.is_absolute() else run.output_dir / self.path
        if run.role != "shard":
            return path
        return path.with_name(f"{path.stem}.w{run.worker}{path.suffix}")

    def write(self, context: dict[str, Any], event: Any) -> None:
        """Append one event."""
        f = self._file
        if f is None:
            from cluster.config import parse_file_mode
            from cluster.outputs import open_append

            target = self._target()
            # Owner-only, never through a link (which could aim the writes anywhere).
            f = self._file = open_append(target, parse_file_mode(self.App.Config))
            if self._resume_at is None:
                f.truncate(0)  # a fresh run starts the file anew
        f.write(dumps(event))
        f.write("\n")

    def flush(self) -> None:
        """Push buffered lines to the file."""
        if self._file is not None:
            self._file.flush()

    def _sync(self) -> None:
        # A checkpoint records the length; after a machine crash the file must still be
        # at least that long, or the lines between are lost on restore.
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush, fsync and close the file."""
        if self._file is not None:
            self._sync()
            self._file.close()
            self._file = None
