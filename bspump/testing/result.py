"""What a run of :func:`bspump.testing.run_pipeline` produced."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class RunFailed(AssertionError):
    """The run did not finish with exit code 0; the message holds what it printed."""


def hashable(value: Any) -> Any:
    """A key read back from JSON (lists where there were tuples), made hashable."""
    if isinstance(value, list):
        return tuple(hashable(v) for v in value)
    return value


@dataclass
class PipelineResult:
    """What one run of a pipeline produced, the same shape on every topology.

    Rows and events are as a JSON file would give them back (tuples become lists),
    so results of ``workers=0`` and of a cluster run compare equal. Windows, sessions
    and anomalies are keyed by analyzer id. ``sink`` holds what reached the sink,
    in input order per worker (the order across workers is not defined).
    """

    workers: int
    windows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sessions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    anomalies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    matrices: dict[str, np.ndarray] = field(default_factory=dict)
    sink: list[Any] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    late_events: list[dict[str, Any]] = field(default_factory=list)
    stdout: str = ""
    # summary.json of a cluster run (None for workers=0); its output folder, if kept.
    summary: dict[str, Any] | None = None
    output_dir: Path | None = None

    def window_counts(self, analyzer: str) -> dict[tuple[Any, Any, Any], float]:
        """``{(window_start, window_end, key): count}`` of one TimeWindowAnalyzer."""
        counts: dict[tuple[Any, Any, Any], float] = {}
        for row in self.windows.get(analyzer, []):
            slot = (row["window_start"], row["window_end"], hashable(row["key"]))
            if slot in counts:
                raise AssertionError(f"{analyzer}: window row {slot} written twice")
            counts[slot] = row["count"]
        return counts

    def session_list(self, analyzer: str) -> list[tuple[Any, Any, Any, int]]:
        """Sorted ``(key, start, end, events)`` of one SessionAnalyzer's ended sessions."""
        return sorted((hashable(s["key"]), s["start"], s["end"], s["events"])
                      for s in self.sessions.get(analyzer, []))


def number(x: float) -> int | float:
    """An integral float as int, as the cluster writes counts and epoch seconds."""
    return int(x) if float(x).is_integer() else float(x)


def plain(obj: Any) -> Any:
    """``obj`` as JSON gives it back, so in-process results look like a cluster's."""
    def default(o: Any) -> Any:
        if hasattr(o, "item"):
            return o.item()
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        if isinstance(o, (bytes, bytearray)):
            return bytes(o).decode("utf-8", "replace")
        return repr(o)

    return json.loads(json.dumps(obj, default=default))
