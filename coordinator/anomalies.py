"""Anomalies on merged windows: each key's count in a closed period against its own past.

A ``TimeWindowAnalyzer`` with ``anomaly_history = K`` (periods) and
``anomaly_threshold = Z`` is checked here, in the coordinator, on the rows the merge of
every shard writes, so the answer is the same on any number of workers and any batch
size. When a period has been merged, each key with a row in it is compared with the
key's counts in the K periods before it (a period without a row counts 0), once the
key's first row is at least K periods old. With the mean and the population standard
deviation of those K counts, the row is an anomaly when std > 0 and
``|count - mean| > Z * std``; its score is ``|count - mean| / std``.

The state (each key's first period and its counts in the last K periods) is part of
every checkpoint, so a restore, on any number of workers, finds the same anomalies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from bspump.anomaly import Anomaly
from cluster.merge import hashable_key
from cluster.outputs import number


class WindowAnomalies:
    """The anomaly rule of one TimeWindowAnalyzer, over its merged rows in period order."""

    def __init__(self, analyzer_id: str, resolution: float, history: int,
                 threshold: float) -> None:
        self.analyzer_id = analyzer_id
        self.resolution = resolution
        self.history = history
        self.threshold = threshold
        self.first: dict[Any, int] = {}  # key -> first period with a row
        self.recent: dict[Any, dict[int, float]] = {}  # key -> {period: count}, last K
        self.newest = -1  # newest period checked
        self.found = 0

    def check(self, rows: Iterable[dict[str, Any]]) -> list[Anomaly]:
        """The anomalies among merged rows (oldest period first, as the merge writes them)."""
        found: list[Anomaly] = []
        k, z = self.history, self.threshold
        for row in rows:
            period = round(row["window_start"] / self.resolution)
            key = hashable_key(row["key"])
            count = float(row["count"])
            first = self.first.setdefault(key, period)
            past = self.recent.setdefault(key, {})
            if period - first >= k:
                values = [past.get(p, 0.0) for p in range(period - k, period)]
                mean = sum(values) / k
                std = math.sqrt(sum((v - mean) ** 2 for v in values) / k)
                if std > 0 and abs(count - mean) > z * std:
                    found.append(Anomaly(
                        key=row["key"], value=row["count"], score=abs(count - mean) / std,
                        event_time=row["window_end"], kind="window",
                        details={"analyzer": self.analyzer_id, "mean": mean, "std": std,
                                 "window_start": row["window_start"],
                                 "window_end": row["window_end"]}))
            past[period] = count
            for old in [p for p in past if p <= period - k]:
                del past[old]
            self.newest = max(self.newest, period)
        self.found += len(found)
        return found

    def state(self) -> dict[str, Any]:
        """msgpack-ready: first periods, counts still inside the history, the newest period."""
        horizon = self.newest - self.history
        return {"first": [[k, p] for k, p in self.first.items()],
                "recent": [[k, [[p, c] for p, c in past.items() if p > horizon]]
                           for k, past in self.recent.items()
                           if any(p > horizon for p in past)],
                "newest": self.newest, "found": self.found}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.first = {hashable_key(k): int(p) for k, p in state["first"]}
        self.recent = {hashable_key(k): {int(p): float(c) for p, c in past}
                       for k, past in state["recent"]}
        self.newest = int(state["newest"])
        self.found = int(state["found"])


def row_of(anomaly: Anomaly) -> dict[str, Any]:
    """The line an anomaly of a merged window is written as, in ``*.anomalies.jsonl``."""
    d = anomaly.details
    return {"window_start": d["window_start"], "window_end": d["window_end"],
            "key": anomaly.key, "count": anomaly.value, "mean": number(d["mean"]),
            "std": number(d["std"]), "score": anomaly.score}
