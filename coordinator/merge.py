"""Merging the workers' reports into the run's results.

A worker's report (with each ack) carries what its analyzers did since the last one:
new window keys and closed periods, ended sessions, anomalies of keyed detectors,
dead letters and its event counts. :class:`Merger` writes those, and when every
worker has acked a watermark it reads the closed windows in place from the workers'
shared memory (:class:`cluster.merge.WindowMerger`), writes the merged rows, checks
them for anomalies and hands them to the sink. The shards' matrices are summed here
too.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from bspump.analyzer import TimeWindowAnalyzer
from bspump.matrix import PersistentMatrix
from cluster import wire
from cluster.merge import WindowMerger
from cluster.outputs import RunOutputs, number, save_npy
from cluster.shm import Segment
from coordinator.anomalies import WindowAnomalies, row_of
from coordinator.ledger import Counts
from coordinator.wait import Waiter
from coordinator.watermark import Frontier

WINDOW_HISTORY = 120  # merged periods kept per TimeWindowAnalyzer for the page
TOP_KEYS = 12  # keys per period kept for the page
RECENT_ANOMALIES = 50  # anomalies kept for the page


class Merger:
    """Applies worker reports, merges closed windows, sums matrices, publishes rows."""

    def __init__(self, pipeline: Any, matrices: dict[str, Any], outputs: RunOutputs,
                 counts: Counts, frontier: Frontier, waiter: Waiter, file_mode: int) -> None:
        self.pipeline = pipeline
        self.matrices = matrices  # the application's, by id: the shards' sum goes there
        self.outputs = outputs
        self.counts = counts
        self.frontier = frontier
        self.waiter = waiter
        self.file_mode = file_mode
        workers = counts.workers
        analyzers = [p for p in pipeline.Processors if isinstance(p, TimeWindowAnalyzer)]
        self.mergers = {p.Id: WindowMerger(p.Id, p.resolution, workers) for p in analyzers}
        self.anomalies = {p.Id: WindowAnomalies(p.Id, p.resolution, p.anomaly_history,
                                                p.anomaly_threshold)
                          for p in analyzers if p.anomaly_history}
        self.keyed_anomalies: dict[str, int] = {}
        self.shard_matrices: dict[str, list[np.ndarray | None]] = {
            mid: [None] * workers for mid in matrices}
        # Attached segments stay referenced for the run, or their memory would be unmapped.
        self._segments: list[Segment] = []
        self.window_history: dict[str, deque[dict[str, Any]]] = {
            aid: deque(maxlen=WINDOW_HISTORY) for aid in self.mergers}
        self.recent_anomalies: deque[dict[str, Any]] = deque(maxlen=RECENT_ANOMALIES)
        self._unpublished_anomalies: list[dict[str, Any]] = []

    def attach(self, worker: int, table: dict[str, tuple[str, list[int], str]]) -> None:
        """Attach a worker's shared memory, as its hello lists it: matrices, window rings."""
        for logical, (name, shape, dtype) in table.items():
            seg = Segment.attach(name, tuple(shape), dtype)
            if logical.startswith("m.") and logical[2:] in self.shard_matrices:
                self.shard_matrices[logical[2:]][worker] = seg.array
            elif logical.endswith(".windows"):
                aid = logical[len(self.pipeline.Id) + 1: -len(".windows")]
                if aid in self.mergers:
                    # The merger keeps it: a ring that grows replaces it (WindowMerger.report).
                    self.mergers[aid].attach(worker, seg.array, seg)
                    continue
            self._segments.append(seg)

    def apply(self, worker: int, report: wire.ShardReport) -> None:
        """Take in one worker's report: window news, ended sessions, anomalies, dead letters."""
        counts = self.counts
        for aid, news in report.analyzers.items():
            merger = self.mergers.get(aid)
            if merger is not None:
                merger.report(worker, news.keys, news.closed, news.rows, news.segment)
            ended = news.ended
            if ended:
                out = self.outputs.sessions(aid)
                for key, first, last, events in ended:
                    out.write({"key": key, "start": number(first), "end": number(last),
                               "events": events})
                counts.sessions_ended += len(ended)
            found = news.anomalies
            if found:  # a per-event keyed detector (bspump.anomaly.KeyedAnomalyDetector)
                for key, t, value, mean, std, score in found:
                    self._anomaly(aid, {"key": key, "event_time": t, "value": value,
                                        "mean": mean, "std": std, "score": score})
                self.keyed_anomalies[aid] = self.keyed_anomalies.get(aid, 0) + len(found)
        for d in report.dead:
            self.outputs.dead_letter(d.reason, d.record, worker=worker,
                                     processor=d.processor, event_time=d.event_time)
            counts.dead += 1
        if report.open_sessions is not None:
            counts.open_sessions[worker] = report.open_sessions
        if report.events_in is not None:
            counts.processed[worker] = report.events_in
            counts.batched[worker] = report.events_batched
            counts.failed[worker] = report.events_failed

    def merge(self, watermark: float) -> list[dict[str, Any]]:
        """Write the windows every worker has closed at ``watermark``; return the rows."""
        if watermark <= self.frontier.merged:
            return []
        written: list[dict[str, Any]] = []
        for aid, merger in self.mergers.items():
            rows = merger.emit(watermark)
            if rows:
                out = self.outputs.windows(aid)
                for row in rows:
                    out.write(row)
                self.counts.window_rows += len(rows)
                written.extend({"analyzer": aid, **row} for row in rows)
                self._remember_windows(aid, rows)
                detector = self.anomalies.get(aid)
                if detector is not None:
                    found = detector.check(rows)
                    for anomaly in found:
                        self._anomaly(aid, row_of(anomaly))
        self.outputs.flush()
        self.frontier.merged = watermark
        self.waiter.notify()
        return written

    async def publish(self, rows: list[dict[str, Any]]) -> None:
        """Hand merged window rows and new anomalies to the sink when it publishes them."""
        publish = getattr(self.pipeline.Sink, "publish_windows", None)
        if rows and publish is not None:
            await publish(rows)
        anomalies, self._unpublished_anomalies = self._unpublished_anomalies, []
        publish = getattr(self.pipeline.Sink, "publish_anomalies", None)
        if anomalies and publish is not None:
            await publish(anomalies)

    async def merge_all(self) -> None:
        """At the end of the input: merge and publish every window still open."""
        await self.publish(self.merge(math.inf))

    def anomaly_counts(self) -> dict[str, int]:
        """Anomalies found so far, per analyzer (merged windows and keyed detectors)."""
        return {**{aid: d.found for aid, d in self.anomalies.items()}, **self.keyed_anomalies}

    def state(self) -> dict[str, Any]:
        """The coordinator's own state for a checkpoint: the anomaly detectors'."""
        return {"anomalies": {aid: d.state() for aid, d in self.anomalies.items()},
                "keyed_anomalies": self.keyed_anomalies}

    def has_state(self) -> bool:
        """Whether :meth:`state` holds anything worth writing."""
        return bool(self.anomalies or self.keyed_anomalies)

    def set_state(self, own: dict[str, Any]) -> None:
        """Resume the anomaly detectors from a checkpoint's coordinator state."""
        self.keyed_anomalies = dict(own.get("keyed_anomalies") or {})
        for aid, detector in self.anomalies.items():
            saved = (own.get("anomalies") or {}).get(aid)
            if saved is not None:
                detector.set_state(saved)

    def summed(self, mid: str) -> np.ndarray:
        """Matrix ``mid`` summed over the shards (the application's own before any hello)."""
        arrays = [a for a in self.shard_matrices[mid] if a is not None]
        return np.sum(arrays, axis=0) if arrays else self.matrices[mid].Array

    def save_matrices(self, folder: Any) -> None:
        """At the end of the input: every merged matrix as ``<folder>/<id>.npy``."""
        for mid in self.matrices:
            save_npy(folder / f"{mid}.npy", self.summed(mid), self.file_mode)

    def save_persistent(self) -> None:
        """Save each PersistentMatrix, merged, to its own path."""
        for mid, matrix in self.matrices.items():
            if isinstance(matrix, PersistentMatrix):
                save_npy(matrix.path, self.summed(mid), self.file_mode)

    def _anomaly(self, aid: str, row: dict[str, Any]) -> None:
        """Write an anomaly, keep it for the page, queue it for the sink's topic."""
        self.outputs.anomalies(aid).write(row)
        self.recent_anomalies.append({**row, "analyzer": aid})
        self._unpublished_anomalies.append(row)

    def _remember_windows(self, aid: str, rows: list[dict[str, Any]]) -> None:
        """Keep each merged period's total and top keys for the page."""
        by_period: dict[Any, dict[Any, Any]] = {}
        for row in rows:
            by_period.setdefault(row["window_start"], {})[row["key"]] = row["count"]
        history = self.window_history[aid]
        for start, counts in by_period.items():
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:TOP_KEYS]
            history.append({"window_start": start, "total": sum(counts.values()),
                            "keys": len(counts), "top": [[str(k), v] for k, v in top]})
