"""FileJSONLinesSink: events as JSON lines, one file per worker, cut back on restore."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bspump.processor import Sink
from bspump.resultfiles import dumps, open_append, parse_file_mode, truncate_result

if TYPE_CHECKING:
    from bspump.application import Application
    from bspump.pipeline import Pipeline


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
