"""FileCSVSource: a CSV file with a header row, read row by row.

A row that cannot be read costs that row alone: it is one dead letter naming the line
where it starts, and the rows after it are read as usual.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import re
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

from bspump.file.source import _FileSource, skip_line
from bspump.processor import SourceBatch
from bspump.records import BOM, Limits, line_place, preview, too_large

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
                cut = len(raw) + (0 if raw.endswith(b"\n") else skip_line(self.f))
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
