"""File sources and sinks: JSON lines, CSV and msgpack files; a JSON-lines file sink."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgpack

from bspump.processor import Sink, Source, SourceBatch
from cluster.outputs import dumps

if TYPE_CHECKING:
    from bspump.application import Application
    from bspump.pipeline import Pipeline

_PREVIEW = 512


def _skip_line(f: IO[bytes]) -> int:
    """Read past the rest of an over-long line without holding it; bytes skipped."""
    skipped = 0
    while True:
        more = f.readline(1 << 20)
        skipped += len(more)
        if not more or more.endswith(b"\n"):
            return skipped


def _preview(raw: bytes) -> str:
    text = raw[:_PREVIEW].decode("utf-8", "replace")
    return text + (f"... ({len(raw)} bytes)" if len(raw) > _PREVIEW else "")


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
    """One JSON object per line. Position: byte offset and line number after a batch."""

    supports_raw = True
    RAW_CHUNK = 1 << 20

    def _resume(self, f: IO[bytes]) -> int:
        """Seek to the saved position; the number of lines before it."""
        if not self._start_at:
            return 0
        f.seek(int(self._start_at["offset"]))
        return int(self._start_at["line"])

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Read the file in batches of ``batch`` lines (raw: in chunks of about 1 MiB)."""
        if self.want_raw:
            async for batch in self._raw_batches():
                yield batch
            return
        limit = self.max_record_bytes
        name = str(self.path)
        with self._open() as f:
            line_no = self._resume(f)
            loads = json.loads
            while True:
                records: list[Any] = []
                dead: list[tuple[Any, str]] = []
                at_end = False
                for _ in range(self.batch):
                    line = f.readline(limit + 1)
                    if not line:
                        at_end = True
                        break
                    line_no += 1
                    if len(line) > limit and not line.endswith(b"\n"):
                        size = len(line) + _skip_line(f)
                        dead.append((_preview(line), f"{name}:{line_no}: record of {size} "
                                                     f"bytes exceeds max_record_bytes={limit}"))
                        continue
                    if not line.strip():
                        continue
                    try:
                        obj = loads(line)
                    except ValueError as e:
                        dead.append((_preview(line.rstrip(b"\r\n")),
                                     f"{name}:{line_no}: malformed JSON: {e}"))
                        continue
                    if not isinstance(obj, dict):
                        dead.append((obj, f"{name}:{line_no}: not a JSON object"))
                        continue
                    records.append(obj)
                # A batch of blank lines is not the end of the file: only EOF is.
                if records or dead:
                    yield SourceBatch(records, dead, {"offset": f.tell(), "line": line_no})
                    await asyncio.sleep(0)
                if at_end:
                    return


    async def _raw_batches(self) -> AsyncIterator[SourceBatch]:
        """Whole lines, undecoded: the coordinator decodes only what routing needs."""
        limit = self.max_record_bytes
        name = str(self.path)
        with self._open() as f:
            line_no = self._resume(f)
            carry = b""
            while True:
                chunk = f.read(self.RAW_CHUNK)
                if chunk:
                    lines = (carry + chunk).split(b"\n")
                    carry = lines.pop()
                else:
                    lines, carry = ([carry] if carry else []), b""
                oversize = 0
                if len(carry) > limit:
                    # An unfinished line already over the limit: skip to its end.
                    oversize = len(carry) + _skip_line(f)
                    carry = b""
                raw: list[bytes] = []
                dead: list[tuple[Any, str]] = []
                numbers: list[int] | None = None  # only when lines were left out
                first = line_no + 1
                if lines and all(lines) and max(map(len, lines)) <= limit:
                    raw, lines_left = lines, []  # the usual chunk: nothing to leave out
                else:
                    lines_left = lines
                for i, line in enumerate(lines_left):
                    if line and len(line) <= limit and not line.isspace():
                        raw.append(line)
                        if numbers is not None:
                            numbers.append(first + i)
                        continue
                    if numbers is None:
                        numbers = list(range(first, first + i))
                    if len(line) > limit:
                        dead.append((_preview(line), f"{name}:{first + i}: record of {len(line)} "
                                                     f"bytes exceeds max_record_bytes={limit}"))
                line_no += len(lines)
                if oversize:
                    line_no += 1
                    dead.append((None, f"{name}:{line_no}: record of {oversize} bytes exceeds "
                                       f"max_record_bytes={limit}"))
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


class FileCSVSource(_FileSource):
    """A CSV file with a header row; numeric cells become numbers unless told otherwise."""

    ConfigDefaults: dict[str, Any] = {"delimiter": ",", "convert_numbers": True,
                                      "encoding": "utf-8"}

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Read rows in batches; position is the number of data rows read."""
        convert = bool(self.Config["convert_numbers"])
        skip = int(self._start_at or 0)
        with self._open() as raw:
            text = io.TextIOWrapper(raw, encoding=self.Config["encoding"], newline="")
            reader = csv.DictReader(text, delimiter=self.Config["delimiter"])
            row_no = 0
            records: list[Any] = []
            dead: list[tuple[Any, str]] = []
            try:
                for row in reader:
                    row_no += 1
                    if row_no <= skip:
                        continue
                    if None in row or any(v is None for v in row.values()):
                        # DictReader pads a short row with None and puts extra cells under None.
                        fields = (sum(v is not None for k, v in row.items() if k is not None)
                                  + len(row.get(None) or []))
                        dead.append((row, f"{self.path}:{reader.line_num}: row has "
                                          f"{fields} fields, header has "
                                          f"{len(reader.fieldnames or [])}"))
                    else:
                        records.append({k: _number(v) for k, v in row.items()} if convert
                                       else dict(row))
                    if len(records) + len(dead) >= self.batch:
                        yield SourceBatch(records, dead, row_no)
                        records, dead = [], []
                        await asyncio.sleep(0)
            except (csv.Error, UnicodeDecodeError) as e:
                dead.append((None, f"{self.path}:{reader.line_num}: unreadable CSV, rest of "
                                   f"file skipped: {e}"))
            if records or dead:
                yield SourceBatch(records, dead, row_no)


class FileMsgpackSource(_FileSource):
    """A stream of msgpack maps, one per record. Position: byte offset."""

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Read records in batches; a corrupt stream ends the file with a dead letter."""
        with self._open() as f:
            if self._start_at:
                f.seek(int(self._start_at))
            base = f.tell()
            unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False,
                                        max_buffer_size=max(self.max_record_bytes, 1 << 16))
            # Offset after the last whole record: unpacker.tell() moves into a record that
            # turns out to be cut short, so it is neither a resume point nor where it broke.
            pos = base
            done = False
            while not done:
                records: list[Any] = []
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
                        dead.append((None, f"{self.path}: corrupt msgpack at byte "
                                           f"{pos}, rest of file skipped: "
                                           f"{type(e).__name__}: {e}"))
                        done = True
                        break
                    if isinstance(obj, dict):
                        records.append(obj)
                    else:
                        dead.append((obj, f"{self.path}: record at byte {pos} is not a map"))
                    pos = base + unpacker.tell()
                if records or dead:
                    yield SourceBatch(records, dead, pos)
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
