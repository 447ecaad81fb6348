"""Sinks and sources of everyday use: null, stdout, stdin."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

from bspump.errors import RecordError
from bspump.file.source import skip_line
from bspump.processor import NOTHING, Sink, Source, SourceBatch
from bspump.records import decode_json, line_place, preview, too_large
from bspump.resultfiles import dumps


class NullSink(Sink):
    """Discards every event (the pipeline's analyzers are what matters)."""

    def write(self, context: dict[str, Any], event: Any) -> None:
        """Discard the event."""

    def _step(self) -> tuple[Any, bool]:
        return None, False  # nothing to call per event

    def _batch_step(self) -> Any:
        return NOTHING


class StdoutSink(Sink):
    """Prints each event as one JSON line; on workers the lines reach the cluster's stdout."""

    def write(self, context: dict[str, Any], event: Any) -> None:
        """Print one event."""
        sys.stdout.write(dumps(event) + "\n")


class StdinSource(Source):
    """Reads JSON lines from standard input until it closes.

    Blank lines are not records; every other line is a record or a dead letter
    (``stdin:line``, reason, preview), by the same rule as a JSON-lines file.
    """

    def _read_batch(self) -> tuple[list[Any], list[int], list[tuple[Any, str]], int]:
        records: list[Any] = []
        numbers: list[int] = []
        dead: list[tuple[Any, str]] = []
        limits = self.record_limits
        stdin = sys.stdin.buffer
        read = 0
        for _ in range(int(self.Config["batch"])):
            # The newline is not part of the record: read one byte more for it.
            line = stdin.readline(limits.max_bytes + 2)
            if not line:
                break
            read += 1
            self._line += 1
            place = line_place("stdin", self._line)
            body = line.rstrip(b"\r\n")
            if len(body) > limits.max_bytes:
                size = len(line) + (0 if line.endswith(b"\n") else skip_line(stdin))
                dead.append((preview(body), f"{place}: {too_large(size, limits)}"))
                continue
            if not body.strip():
                continue  # a blank line is no record
            try:
                records.append(decode_json(body, limits))
            except RecordError as e:
                dead.append((preview(body), f"{place}: {e}"))
                continue
            numbers.append(self._line)
        return records, numbers, dead, read

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Read stdin in a thread so the coordinator keeps serving its workers."""
        self._line = 0
        while True:
            records, numbers, dead, read = await asyncio.to_thread(self._read_batch)
            if not read:
                return
            if records or dead:
                yield SourceBatch(records, dead, self._line, raw_origin="stdin",
                                  raw_lines=numbers)
