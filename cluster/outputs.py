"""Files a run writes: JSON-lines results, dead letters, late events, matrices, summary.

Result files are written by one process only (the coordinator), so lines from
several workers never cut into each other. Whole files (checkpoint files, manifests,
matrices, summary, report) go through
:func:`atomic_write_bytes`: a crash leaves the previous version whole.

Result files hold user ids: they are created owner-only (``[cluster] file_mode``,
default 0600), and never opened through a symbolic link, which could point a write
or a truncation at any file the user may write (:mod:`bspump.resultfiles`, which the
pipeline's file sink uses too, opens and cuts them).
"""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import IO, Any

import numpy as np

from bspump.resultfiles import (
    FILE_MODE,
    dumps,
    json_default,
    load_npy,
    open_append,
    truncate_result,
)

__all__ = ["FILE_MODE", "JsonLinesWriter", "RunOutputs", "atomic_write_bytes", "dumps",
           "fsync_dir", "load_npy", "number", "open_append", "save_npy", "truncate_result"]


def number(x: float) -> int | float:
    """An integral float as int, so counts and epoch seconds print without ``.0``."""
    return int(x) if float(x).is_integer() else float(x)


class JsonLinesWriter:
    """Appends JSON lines to one file, opened on first write."""

    def __init__(self, path: Path, mode: int = FILE_MODE) -> None:
        self.path = path
        self.mode = mode
        self._file: IO[str] | None = None
        self.lines = 0
        self.written: tuple[int, int, int] | None = None  # device, inode, size when closed

    def write(self, obj: Any) -> None:
        """Append one record."""
        if self._file is None:
            self._file = open_append(self.path, self.mode)
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
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE,
                       sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new file, whole.

    The one writer of every whole file the cluster relies on after a crash:

    1. write a temporary file beside ``path`` (created anew, owner-only or ``mode``);
    2. fsync it, so its bytes are on disk before any name points at them;
    3. rename it over ``path`` (a link at ``path`` is replaced, not followed);
    4. fsync the folder, so the rename itself survives. ``sync_dir=False`` leaves this
       to the caller, which fsyncs the folder once after renaming several files.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.unlink(missing_ok=True)  # O_EXCL below: a name planted in advance is not followed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def save_npy(path: Path, array: np.ndarray, mode: int = FILE_MODE) -> None:
    """Save an array as ``.npy`` atomically (loadable with ``allow_pickle=False``)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue(), mode)


# The per-analyzer result files: <pipeline>.<analyzer>.<kind>.jsonl
RESULT_KINDS = ("windows", "sessions", "anomalies")


class RunOutputs:
    """The coordinator's result files for one pipeline run."""

    def __init__(self, output_dir: Path, pipeline_id: str, mode: int = FILE_MODE) -> None:
        self.dir = output_dir
        self.pipeline_id = pipeline_id
        self.mode = mode
        self.dead_letters = JsonLinesWriter(output_dir / "dead-letters.jsonl", mode)
        self.late_events = JsonLinesWriter(output_dir / "late-events.jsonl", mode)
        self._per_analyzer: dict[tuple[str, str], JsonLinesWriter] = {}

    def dead_letter(self, reason: str, record: Any, **where: Any) -> None:
        """Keep a record that could not be processed, with the reason."""
        if isinstance(record, (bytes, bytearray, memoryview)):
            record = bytes(record).decode("utf-8", "replace")  # text, not base64
        self.dead_letters.write({"reason": reason, **where, "record": record})

    def late(self, record: Any, event_time: float | None, watermark: float) -> None:
        """Keep an event that arrived behind the watermark."""
        self.late_events.write({"event_time": event_time, "watermark": number(watermark),
                                "record": record})

    def of(self, analyzer_id: str, kind: str) -> JsonLinesWriter:
        """``<pipeline>.<analyzer>.<kind>.jsonl``: one analyzer's rows of one kind."""
        w = self._per_analyzer.get((analyzer_id, kind))
        if w is None:
            w = self._per_analyzer[(analyzer_id, kind)] = JsonLinesWriter(
                self.dir / f"{self.pipeline_id}.{analyzer_id}.{kind}.jsonl", self.mode)
        return w

    def windows(self, analyzer_id: str) -> JsonLinesWriter:
        """The window rows of one TimeWindowAnalyzer."""
        return self.of(analyzer_id, "windows")

    def sessions(self, analyzer_id: str) -> JsonLinesWriter:
        """The ended sessions of one SessionAnalyzer."""
        return self.of(analyzer_id, "sessions")

    def anomalies(self, analyzer_id: str) -> JsonLinesWriter:
        """The anomalies found on one TimeWindowAnalyzer's merged windows."""
        return self.of(analyzer_id, "anomalies")

    def _all(self) -> list[JsonLinesWriter]:
        return [self.dead_letters, self.late_events, *self._per_analyzer.values()]

    def flush(self) -> None:
        """Flush every open file."""
        for w in self._all():
            w.flush()

    def result_files(self) -> list[Path]:
        """Every JSON-lines result file of this pipeline that exists now."""
        found = [*(p for kind in RESULT_KINDS
                   for p in self.dir.glob(f"{self.pipeline_id}.*.{kind}.jsonl")),
                 self.dir / "dead-letters.jsonl", self.dir / "late-events.jsonl"]
        return [p for p in found if p.exists() or p.is_symlink()]

    def lengths(self) -> dict[str, int]:
        """Synced length of every result file, for a checkpoint manifest."""
        for w in self._all():
            w.sync()
        # lstat: a link planted at a result path is not ours, and has no length to keep.
        return {p.name: st.st_size for p in self.result_files()
                if stat.S_ISREG((st := p.lstat()).st_mode)}

    def truncate_to(self, lengths: dict[str, int]) -> None:
        """Restore: cut each result file back to its checkpointed length, drop newer files."""
        self.close()
        for w in self._all():
            w.written = None  # cut below: the end-of-run check starts from the new lengths
        for p in self.result_files():
            if p.name in lengths:
                truncate_result(p, lengths[p.name])
            else:
                p.unlink()  # removes a link itself, never its target

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
                           json.dumps(summary, indent=2, default=json_default).encode(),
                           self.mode)
