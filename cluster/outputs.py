"""Files a run writes: JSON-lines results, dead letters, late events, matrices, summary.

Result files are written by one process only (the coordinator, or the in-process
runner), so lines from several workers never cut into each other. Whole files
(matrices, summary) go to a temporary name, are fsynced and renamed: a crash
leaves the previous version whole.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


_encoder = msgspec.json.Encoder(enc_hook=_json_default)


def dumps(obj: Any) -> str:
    """JSON for a result line; anything JSON cannot hold becomes its closest text."""
    try:
        return _encoder.encode(obj).decode()
    except (TypeError, ValueError, OverflowError):
        # Keys JSON cannot have, huge integers...: the standard library is more lenient.
        return json.dumps(obj, default=_json_default, ensure_ascii=False)


def number(x: float) -> int | float:
    """An integral float as int, so counts and epoch seconds print without ``.0``."""
    return int(x) if float(x).is_integer() else float(x)


class JsonLinesWriter:
    """Appends JSON lines to one file, opened on first write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self.lines = 0
        self.written: tuple[int, int, int] | None = None  # device, inode, size when closed

    def write(self, obj: Any) -> None:
        """Append one record."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
        self._file.write(dumps(obj))
        self._file.write("\n")
        self.lines += 1

    def flush(self) -> None:
        """Push buffered lines to the file."""
        if self._file is not None:
            self._file.flush()

    def sync(self) -> None:
        """Flush and fsync: what was written survives a crash of the machine."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush, fsync and close; remember which file and how long it was."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            st = os.fstat(self._file.fileno())
            self.written = (st.st_dev, st.st_ino, st.st_size)
            self._file.close()
            self._file = None

    def missing(self) -> str | None:
        """Why the closed file is not on disk as written (deleted, moved, cut), or None."""
        if self.written is None:
            return None
        dev, ino, size = self.written
        try:
            st = os.stat(self.path)
        except OSError:
            return (f"{self.path} is not on disk ({size:,} bytes were written to it; was the "
                    "output folder deleted or moved during the run?)")
        if (st.st_dev, st.st_ino) != (dev, ino):
            return f"{self.path} is another file than the one the run wrote (replaced?)"
        if st.st_size != size:
            return f"{self.path} has {st.st_size:,} bytes, the run wrote {size:,}"
        return None


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def save_npy(path: Path, array: np.ndarray) -> None:
    """Save an array as ``.npy`` atomically (loadable with ``allow_pickle=False``)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def load_npy(path: Path) -> np.ndarray:
    """Load an ``.npy`` file without ever unpickling."""
    result: np.ndarray = np.load(path, allow_pickle=False)
    return result


class RunOutputs:
    """The coordinator's result files for one pipeline run."""

    def __init__(self, output_dir: Path, pipeline_id: str) -> None:
        self.dir = output_dir
        self.pipeline_id = pipeline_id
        self.dead_letters = JsonLinesWriter(output_dir / "dead-letters.jsonl")
        self.late_events = JsonLinesWriter(output_dir / "late-events.jsonl")
        self._windows: dict[str, JsonLinesWriter] = {}
        self._sessions: dict[str, JsonLinesWriter] = {}

    def dead_letter(self, reason: str, record: Any, **where: Any) -> None:
        """Keep a record that could not be processed, with the reason."""
        if isinstance(record, (bytes, bytearray, memoryview)):
            record = bytes(record).decode("utf-8", "replace")  # text, not base64
        self.dead_letters.write({"reason": reason, **where, "record": record})

    def late(self, record: Any, event_time: float | None, watermark: float) -> None:
        """Keep an event that arrived behind the watermark."""
        self.late_events.write({"event_time": event_time, "watermark": number(watermark),
                                "record": record})

    def windows(self, analyzer_id: str) -> JsonLinesWriter:
        """The window rows of one TimeWindowAnalyzer."""
        w = self._windows.get(analyzer_id)
        if w is None:
            w = self._windows[analyzer_id] = JsonLinesWriter(
                self.dir / f"{self.pipeline_id}.{analyzer_id}.windows.jsonl")
        return w

    def sessions(self, analyzer_id: str) -> JsonLinesWriter:
        """The ended sessions of one SessionAnalyzer."""
        w = self._sessions.get(analyzer_id)
        if w is None:
            w = self._sessions[analyzer_id] = JsonLinesWriter(
                self.dir / f"{self.pipeline_id}.{analyzer_id}.sessions.jsonl")
        return w

    def _all(self) -> list[JsonLinesWriter]:
        return [self.dead_letters, self.late_events, *self._windows.values(),
                *self._sessions.values()]

    def flush(self) -> None:
        """Flush every open file."""
        for w in self._all():
            w.flush()

    def result_files(self) -> list[Path]:
        """Every JSON-lines result file of this pipeline that exists now."""
        found = [*self.dir.glob(f"{self.pipeline_id}.*.windows.jsonl"),
                 *self.dir.glob(f"{self.pipeline_id}.*.sessions.jsonl"),
                 self.dir / "dead-letters.jsonl", self.dir / "late-events.jsonl"]
        return [p for p in found if p.exists()]

    def lengths(self) -> dict[str, int]:
        """Synced length of every result file, for a checkpoint manifest."""
        for w in self._all():
            w.sync()
        return {p.name: p.stat().st_size for p in self.result_files()}

    def truncate_to(self, lengths: dict[str, int]) -> None:
        """Restore: cut each result file back to its checkpointed length, drop newer files."""
        self.close()
        for w in self._all():
            w.written = None  # cut below: the end-of-run check starts from the new lengths
        for p in self.result_files():
            if p.name in lengths:
                os.truncate(p, min(lengths[p.name], p.stat().st_size))
            else:
                p.unlink()

    def close(self) -> None:
        """Flush, fsync and close every file."""
        for w in self._all():
            w.close()

    def missing(self) -> list[str]:
        """Result files that are not on disk as the run wrote them (after :meth:`close`)."""
        return [problem for w in self._all() if (problem := w.missing()) is not None]

    def sizes(self) -> dict[str, int]:
        """Bytes of every result file the run wrote (after :meth:`close`)."""
        return {w.path.name: w.written[2] for w in self._all() if w.written is not None}

    def write_summary(self, summary: dict[str, Any]) -> None:
        """``summary.json``: the figures of the run."""
        atomic_write_bytes(self.dir / "summary.json",
                           json.dumps(summary, indent=2, default=_json_default).encode())
