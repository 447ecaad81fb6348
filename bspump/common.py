"""Sinks and sources of everyday use: null, stdout, stdin."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from bspump.file import _skip_line
from bspump.processor import NOTHING, Sink, Source, SourceBatch
from cluster.outputs import dumps


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
    """Reads JSON lines from standard input until it closes."""

    def _read_batch(self) -> tuple[list[Any], list[tuple[Any, str]], int]:
        records: list[Any] = []
        dead: list[tuple[Any, str]] = []
        limit = self.max_record_bytes
        read = 0
        for _ in range(int(self.Config["batch"])):
            line = sys.stdin.buffer.readline(limit + 1)
            if not line:
                break
            read += 1
            self._line += 1
            if len(line) > limit and not line.endswith(b"\n"):
                _skip_line(sys.stdin.buffer)
                dead.append((line[:512].decode("utf-8", "replace"),
                             f"stdin:{self._line}: record exceeds max_record_bytes={limit}"))
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                dead.append((line.decode("utf-8", "replace").rstrip("\n"),
                             f"stdin:{self._line}: malformed JSON: {e}"))
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                dead.append((obj, f"stdin:{self._line}: not a JSON object"))
        return records, dead, read

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """Read stdin in a thread so the coordinator keeps serving its workers."""
        self._line = 0
        while True:
            records, dead, read = await asyncio.to_thread(self._read_batch)
            if not read:
                return
            yield SourceBatch(records, dead, self._line)
