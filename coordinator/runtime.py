"""The coordinator: reads the source, routes events, drives event time, merges shards.

One asyncio loop does three things at once: it reads source batches (a task
feeding a small queue), routes them through :class:`cluster.intake.Intake` to the
workers' channels, and receives the workers' acks. When every worker has acked a
watermark, the windows that closed by then are read in place from the workers'
shared memory and merged into the output.

Flow control: data is sent only while the newest watermark sent is at most
``max_lag`` seconds ahead of the newest one every worker has acked, so a worker
never reuses a window slot the coordinator has not read yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bspump.analyzer import SessionAnalyzer, TimeWindowAnalyzer
from bspump.application import ROLE_COORDINATOR, RunInfo
from bspump.batch import EventBatch
from bspump.matrix import PersistentMatrix
from bspump.processor import SourceBatch
from cluster import checkpoint, exits, httpd, wire
from cluster.config import ClusterSettings
from cluster.errors import CheckpointError, ClusterError, ContractError, StartRefused, WorkerDied
from cluster.figures import (
    CheckpointStatus,
    CheckpointTaken,
    HistorySample,
    Snapshot,
    Summary,
    WorkerFigures,
)
from cluster.intake import Intake, IntakeResult
from cluster.layout import Layout
from cluster.loader import load_pipeline
from cluster.logs import MEMBER_ENV, text_prefix
from cluster.manifest import CheckpointFigures, Counters, FileEntry, IntakeState, Manifest
from cluster.merge import WindowMerger
from cluster.outputs import RESULT_KINDS, RunOutputs, number, save_npy
from cluster.records import Limits, late_record
from cluster.shm import Segment
from coordinator.anomalies import WindowAnomalies, row_of
from coordinator.ledger import Ledger
from coordinator.transport import Transport

log = logging.getLogger("bspump-cluster.coordinator")

HELLO_TIMEOUT = 60.0
HISTORY = 600  # seconds of throughput kept for the page
WINDOW_HISTORY = 120  # merged periods kept per TimeWindowAnalyzer for the page
TOP_KEYS = 12  # keys per period kept for the page
FINAL_CHECKPOINT_TIMEOUT = 3.0
PROBE_EVERY = 2  # seconds between asking the source's brokers whether they answer
STALLED_AFTER = 5.0  # seconds of silence after which the snapshot calls a worker stalled
_EOF = object()


@dataclasses.dataclass(frozen=True)
class Timing:
    """Event-time granularity of a run."""

    tick: float
    max_lag: float
    ring_span: float


def timing_of(pipeline: Any, settings: ClusterSettings) -> Timing:
    """Tick = the finest window resolution (or a fraction of the shortest session timeout)."""
    resolutions = [p.resolution for p in pipeline.Processors if isinstance(p, TimeWindowAnalyzer)]
    timeouts = [p.session_timeout for p in pipeline.Processors if isinstance(p, SessionAnalyzer)]
    if resolutions:
        tick = min(resolutions)
    elif timeouts:
        tick = max(min(timeouts) / 4, 0.001)
    else:
        tick = 60.0 if settings.routing.time_field else 1.0
    max_lag = settings.max_lag if settings.max_lag is not None else 8 * tick
    span = settings.routing.allowed_lateness + max_lag + 2 * tick
    return Timing(tick, max_lag, span)


def _fmt_time(t: float) -> str:
    if not math.isfinite(t):
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Coordinator:
    """Routes one pipeline's events to its workers and merges their state."""

    def __init__(self, settings: ClusterSettings, run_id: str, workers: int,
                 fresh: bool = False, restarts: int = 0) -> None:
        self.settings = settings
        self.workers = workers
        self.fresh = fresh
        run = RunInfo(role=ROLE_COORDINATOR, run_id=run_id, workers=workers,
                      output_dir=settings.output_dir,
                      event_time=settings.routing.time_field is not None,
                      max_record_bytes=settings.max_record_bytes,
                      max_record_depth=settings.max_record_depth,
                      key_groups=settings.key_groups, partition=settings.partition)
        self.app, self.pipeline = load_pipeline(settings, run)
        source = self.pipeline.Source
        if source is not None and source.supports_columns:
            source.want_columns = True  # route numpy columns; never build a dict here
        elif source is not None and source.supports_raw:
            source.want_raw = True  # decode routing fields here, the rest on the workers
        self.timing = timing_of(self.pipeline, settings)
        self.run_info = dataclasses.replace(run, ring_span=self.timing.ring_span)
        self.event_time = run.event_time
        self.layout = Layout(workers, settings.key_groups)
        self.intake = Intake(settings.routing, self.layout, self.timing.tick,
                             Limits(settings.max_record_bytes, settings.max_record_depth))
        self.outputs = RunOutputs(settings.output_dir, self.pipeline.Id, settings.file_mode)
        self.mergers = {p.Id: WindowMerger(p.Id, p.resolution, workers)
                        for p in self.pipeline.Processors if isinstance(p, TimeWindowAnalyzer)}
        self.anomalies = {p.Id: WindowAnomalies(p.Id, p.resolution, p.anomaly_history,
                                                p.anomaly_threshold)
                          for p in self.pipeline.Processors
                          if isinstance(p, TimeWindowAnalyzer) and p.anomaly_history}
        self.shard_matrices: dict[str, list[np.ndarray | None]] = {
            mid: [None] * workers for mid in self.app.Matrices}
        self._segments: list[Segment] = []
        self.acked = [-math.inf] * workers
        self.done = [False] * workers
        self.merged_w = -math.inf
        self.sent_w = -math.inf
        self.seq = 0
        self.position: Any = None
        self.records_read = 0
        self.dead = 0  # lines in dead-letters.jsonl
        self.dead_input = 0  # records refused before routing (source, intake)
        self.late = 0
        self.sent = [0] * workers
        self.processed = [0] * workers  # events each worker's pipeline took in
        self.failed = [0] * workers  # of those, events a processor raised on
        self.batched = [0] * workers
        self.sessions_ended = 0
        self.window_rows = 0
        self.restored_from: int | None = None
        self.restored_events = 0
        self.restored_routed = 0
        self.restored_failed = 0
        # Checkpoints
        self.cp_dir = settings.checkpoint_dir
        self.cp_next_id = 1
        self.cp_waiting: int | None = None
        self.cp_files: dict[int, dict[str, FileEntry] | None] = {}
        self.cp_worker_figures: dict[int, wire.WriteFigures | None] = {}
        self.cp_taken = 0
        self.cp_last: CheckpointTaken | None = None
        self._cp_clock = time.monotonic()
        self._cp_records = 0
        self._restored: set[int] = set()
        self.restarts = restarts
        self.open_sessions = [0] * workers
        self.worker_pids: list[int | None] = [None] * workers
        self.last_heard = [time.monotonic()] * workers  # any message from the worker
        self.stalled: set[int] = set()  # workers killed for silence
        self._history: deque[tuple[float, float, int, list[int], list[int]]] = deque(
            maxlen=HISTORY)
        self._window_history: dict[str, deque[dict[str, Any]]] = {
            aid: deque(maxlen=WINDOW_HISTORY) for aid in self.mergers}
        self._checkpoint_history: deque[CheckpointTaken] = deque(maxlen=50)
        self._warnings: deque[dict[str, Any]] = deque(maxlen=10)
        self._recent_anomalies: deque[dict[str, Any]] = deque(maxlen=50)
        self.keyed_anomalies: dict[str, int] = {}
        self._unpublished_anomalies: list[dict[str, Any]] = []
        self.kafka_lag: dict[str, int] = {}
        self._source_down: float | None = None  # since when the source's brokers are silent
        self._progress = asyncio.Event()
        self._stop = asyncio.Event()
        self._failure: BaseException | None = None
        self.started = time.monotonic()
        self._show_progress = settings.progress == "yes" or (
            settings.progress == "auto" and sys.stderr.isatty())
        self.state = "starting"
        self._http_socket: socket.socket | None = None

    # -- startup --------------------------------------------------------------------------

    def prepare_output(self) -> None:
        """Create the output folder and clear the result files of an earlier run."""
        out = self.settings.output_dir
        out.mkdir(parents=True, exist_ok=True)
        pid = self.pipeline.Id
        stale = [*(p for kind in RESULT_KINDS for p in out.glob(f"{pid}.*.{kind}.jsonl")),
                 out / "dead-letters.jsonl", out / "late-events.jsonl", out / "summary.json",
                 *(out / f"{mid}.npy" for mid in self.app.Matrices)]
        for path in stale:
            path.unlink(missing_ok=True)

    async def _await_hellos(self, transport: Transport) -> None:
        pending = set(range(self.workers))
        deadline = time.monotonic() + HELLO_TIMEOUT
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerDied(f"workers {sorted(pending)} did not start within "
                                 f"{HELLO_TIMEOUT:.0f} s")
            msg = await asyncio.wait_for(transport.recv(), left)
            if isinstance(msg, wire.Failed):
                raise WorkerDied(f"worker {msg.worker} could not start: {msg.message}")
            if isinstance(msg, wire.Output):
                self._print(msg.text)
                continue
            if not isinstance(msg, wire.Hello):
                raise WorkerDied(f"unexpected message {type(msg).__name__.upper()} before hello")
            if msg.version != wire.VERSION:
                raise WorkerDied(f"worker {msg.worker} speaks wire protocol version "
                                 f"{msg.version}, this coordinator {wire.VERSION}: the two "
                                 "come from different installs")
            worker = msg.worker
            self._attach(worker, msg.segments)
            self.worker_pids[worker] = msg.pid
            self.last_heard[worker] = time.monotonic()
            pending.discard(worker)

    def _attach(self, worker: int, table: dict[str, tuple[str, list[int], str]]) -> None:
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

    # -- checkpoints ---------------------------------------------------------------------

    async def _restore_or_start_fresh(self, transport: Transport) -> None:
        """Resume from the newest complete checkpoint, or clear old results and start."""
        if self.cp_dir is None:
            self.prepare_output()
            return
        if self.fresh:
            for old in checkpoint.scan(self.cp_dir):
                shutil.rmtree(old.path, ignore_errors=True)
        cp = checkpoint.newest_complete(self.cp_dir)
        self.cp_next_id = checkpoint.next_id(self.cp_dir)
        if cp is None:
            self.prepare_output()
            return
        m = cp.manifest
        assert m is not None
        if m.pipeline != self.pipeline.Id:
            raise CheckpointError(f"{cp.path}: written by pipeline {m.pipeline!r}, "
                                  f"not {self.pipeline.Id!r}; use --fresh or another "
                                  "checkpoint_dir")
        self.settings.output_dir.mkdir(parents=True, exist_ok=True)
        self.outputs.truncate_to(m.outputs)
        self.intake.set_state(m.intake.as_dict())
        watermark = self.intake.watermark if self.event_time else -math.inf
        self.acked = [watermark] * self.workers
        self.merged_w = self.sent_w = watermark
        c = m.counters
        self.records_read, self.dead, self.late = c.records_read, c.dead, c.late
        self.sessions_ended, self.window_rows = c.sessions_ended, c.window_rows
        self.restored_events = c.events_processed
        # At a checkpoint every routed event has been handled (the barrier follows them).
        self.restored_routed = c.events_processed if c.routed is None else c.routed
        self.restored_failed = 0 if c.failed is None else c.failed
        self.dead_input = c.dead - self.restored_failed if c.dead_input is None else c.dead_input
        own = checkpoint.read_coordinator_state(cp.path)
        self.keyed_anomalies = dict(own.get("keyed_anomalies") or {})
        for aid, detector in self.anomalies.items():
            saved = (own.get("anomalies") or {}).get(aid)
            if saved is not None:
                detector.set_state(saved)
        self.position = m.position
        if self.position is not None:
            assert self.pipeline.Source is not None
            self.pipeline.Source.seek(self.position)
        for w in range(self.workers):
            await transport.send(w, wire.Restore(str(cp.path), m.workers))
        await self._wait(lambda: len(self._restored) == self.workers)
        self.restored_from = cp.id
        log.info("restored checkpoint %d (%s workers -> %d): source position %s, watermark %s",
                 cp.id, m.workers, self.workers, json.dumps(self.position),
                 _fmt_time(self.intake.watermark))
        if self.settings.partition is not None:
            log.info("partition %s resumes from checkpoint %d written by %s%s",
                     self.settings.partition, cp.id, m.owner or "-",
                     " (finished)" if m.finished else "")

    def anomaly_counts(self) -> dict[str, int]:
        """Anomalies found so far, per analyzer (merged windows and keyed detectors)."""
        return {**{aid: d.found for aid, d in self.anomalies.items()}, **self.keyed_anomalies}

    def ledger(self) -> Ledger:
        """Where every record read went so far (see :mod:`coordinator.ledger`)."""
        return Ledger.of(read=self.records_read, dead_input=self.dead_input, late=self.late,
                         routed=self.restored_routed + sum(self.sent),
                         handled=self.restored_events + sum(self.processed),
                         failed=self.restored_failed + sum(self.failed),
                         held=len(self.intake.jumps.held))

    def _closing_problems(self) -> list[str]:
        """Why a finished run must not exit 0: a ledger that does not close, lost results."""
        problems = []
        problem = self.ledger().problem()
        if problem is not None:
            problems.append(problem)
        problems += self.outputs.missing()
        return problems

    def _checkpoint_due(self) -> bool:
        if self.cp_dir is None:
            return False
        return (time.monotonic() - self._cp_clock >= self.settings.checkpoint_interval
                or self.records_read - self._cp_records >= self.settings.checkpoint_events)

    async def _checkpoint(self, transport: Transport) -> None:
        """Take a checkpoint at the current source position.

        1. Send a barrier through every worker's channel (after all data sent so far)
           and route nothing more until it completes, so the state, the result files
           and the source position describe the same moment.
        2. Each worker writes its files (temp name, fsync, rename) and acks with their
           sizes and checksums; its earlier acks have already closed and merged every
           window up to the barrier's watermark.
        3. fsync the result files and note their lengths.
        4. Write the manifest (temp, fsync, rename): now the checkpoint is complete.
        5. Save each PersistentMatrix, prune old checkpoints, then commit the source's
           offsets (Kafka), never before the manifest.
        """
        assert self.cp_dir is not None
        began = time.monotonic()
        self._check_still_owner()
        cp_id = self.cp_next_id
        self.cp_next_id += 1
        folder = checkpoint.create_folder(self.cp_dir, cp_id)
        self.cp_files = {}
        self.cp_worker_figures = {}
        self.cp_waiting = cp_id
        for w in range(self.workers):
            await transport.send(w, wire.Barrier(cp_id, str(folder)))
        # Not stoppable: a stop waits for the checkpoint in progress (and takes its own).
        await self._wait(lambda: len(self.cp_files) == self.workers, stoppable=False)
        self.cp_waiting = None
        acked = time.monotonic() - began
        manifest = self._manifest(cp_id, folder)
        size = sum(meta.size for meta in manifest.files.values())
        manifest.figures = figures = CheckpointFigures(
            # Every worker writes its whole state at the barrier, standing still meanwhile.
            worker_write_s=max((f.write_s if f else 0.0
                                for f in self.cp_worker_figures.values()), default=0.0),
            barrier_to_acks_s=round(acked, 6), bytes_written=size, state_bytes=size)
        self._check_still_owner()
        checkpoint.write_manifest(folder, manifest)
        self._save_persistent()
        checkpoint.prune(self.cp_dir, self.settings.checkpoints_kept, cp_id)
        source = self.pipeline.Source
        commit = getattr(source, "commit", None)
        if commit is not None and self.position is not None:
            await commit(self.position)
        self.cp_taken += 1
        took = time.monotonic() - began
        # Routing stood still from the barrier to here: that is the stream's stall.
        self.cp_last = CheckpointTaken(id=cp_id, at=time.time(), duration_s=round(took, 4),
                                       bytes=size, stall_s=round(took, 4),
                                       worker_write_s=figures.worker_write_s,
                                       state_bytes=size)
        self._checkpoint_history.append(self.cp_last)
        log.info("checkpoint %d: %.1f MB in %.3f s", cp_id, size / 1e6, took)
        self._cp_clock = time.monotonic()
        self._cp_records = self.records_read

    def _manifest(self, cp_id: int, folder: Path, finished: bool = False) -> Manifest:
        """The manifest of checkpoint ``cp_id``: this moment, the workers' files and the
        coordinator's own state (written into ``folder`` now)."""
        own = checkpoint.write_coordinator_state(folder, {
            "anomalies": {aid: d.state() for aid, d in self.anomalies.items()},
            "keyed_anomalies": self.keyed_anomalies}) \
            if self.anomalies or self.keyed_anomalies else {}
        return Manifest(
            id=cp_id,
            created=time.time(),
            pipeline=self.pipeline.Id,
            workers=self.workers,
            key_groups=self.settings.key_groups,
            position=self.position,
            intake=IntakeState(**self.intake.state()),
            counters=Counters(records_read=self.records_read, dead=self.dead,
                              late=self.late, sessions_ended=self.sessions_ended,
                              window_rows=self.window_rows,
                              events_processed=self.restored_events + sum(self.processed),
                              routed=self.restored_routed + sum(self.sent),
                              failed=self.restored_failed + sum(self.failed),
                              dead_input=self.dead_input),
            outputs=self.outputs.lengths(),
            files={**{name: meta for files in self.cp_files.values()
                      for name, meta in (files or {}).items()}, **own},
            partition=self.settings.partition,
            owner=os.environ.get(MEMBER_ENV) or socket.gethostname(),
            finished=finished,
        )

    def _check_still_owner(self) -> None:
        """A partition task stops when another host has written to its checkpoint folder.

        Hosts stop their tasks before Kafka moves a partition, so this only trips when a
        host lost the group without noticing (cut off from Kafka, frozen): its task must
        not write over the new owner's checkpoints.
        """
        if self.settings.partition is None or self.cp_dir is None:
            return
        for cp in checkpoint.scan(self.cp_dir):
            if cp.id >= self.cp_next_id:  # created by a writer that started after us
                m = checkpoint.verify(cp, checksums=False).manifest
                owner = (m.owner if m else None) or "?"
                raise ClusterError(
                    f"partition {self.settings.partition} moved to another host: checkpoint "
                    f"{cp.id} in {self.cp_dir} is not ours (written by {owner});"
                    " stopping without writing")

    def _finished_checkpoint(self, folder: Path) -> None:
        """A partition task reached the end: results complete, position at the end.

        The partition may move to another host later; restoring this checkpoint keeps
        the results and goes on from the end (every window was closed at the end).
        """
        assert self.cp_dir is not None
        cp_id = self.cp_next_id
        self.cp_next_id += 1
        checkpoint.write_manifest(folder, self._manifest(cp_id, folder, finished=True))
        checkpoint.prune(self.cp_dir, self.settings.checkpoints_kept, cp_id)
        log.info("partition %s finished at %s (checkpoint %d)", self.settings.partition,
                 json.dumps(self.position), cp_id)

    def bind_http(self) -> None:
        """Bind the HTTP port now, before any result is touched: a taken port refuses the run."""
        if not self.settings.http:
            return
        host, port = self.settings.http
        try:
            self._http_socket = httpd.bind(host, port)
        except OSError as e:
            where = self.settings.config.where("cluster", "http")
            raise StartRefused(f"cannot serve http on {host}:{port} ({where}): "
                               f"{e.strerror or e}") from None

    async def _start_http(self) -> httpd.HttpServer | None:
        """Serve /metrics, /api/snapshot and the live page when ``[cluster] http`` is set."""
        if not self.settings.http:
            return None
        from coordinator import web

        host, port = self.settings.http
        server = await web.serve(self, host, port, self._http_socket)
        log.info("metrics and live page on http://%s:%d/", host, server.port)
        return server

    def _write_report(self) -> None:
        """``report.html``: the live page with the final figures, readable offline."""
        from coordinator import web

        try:
            web.write_report(self.snapshot().to_dict(), self.settings.output_dir / "report.html",
                             self.settings.file_mode)
        except OSError as e:
            log.error("cannot write report.html: %s", e)

    def _summed(self, mid: str) -> np.ndarray:
        arrays = [a for a in self.shard_matrices[mid] if a is not None]
        return np.sum(arrays, axis=0) if arrays else self.app.Matrices[mid].Array

    def _save_persistent(self) -> None:
        for mid, matrix in self.app.Matrices.items():
            if isinstance(matrix, PersistentMatrix):
                save_npy(matrix.path, self._summed(mid), self.settings.file_mode)

    # -- receiving ------------------------------------------------------------------------------

    async def _receive(self, transport: Transport) -> None:
        while True:
            msg = await transport.recv()
            worker = msg.worker
            if not 0 <= worker < self.workers:
                raise ContractError(f"{type(msg).__name__.upper()}: field \"worker\" is "
                                    f"{worker}, not a worker of this run")
            self.last_heard[worker] = time.monotonic()
            if isinstance(msg, wire.Heartbeat):
                continue
            if isinstance(msg, wire.Ack):
                self._apply(worker, msg.report)
                if msg.seq != -1:
                    assert msg.watermark is not None
                    self.acked[worker] = msg.watermark
                    await self._publish(self._merge(min(self.acked)))
            elif isinstance(msg, wire.Done):
                self._apply(worker, msg.report)
                self.cp_files[worker] = msg.files
                self.done[worker] = True
                self._progress.set()
            elif isinstance(msg, wire.Checkpointed):
                self._apply(worker, msg.report)
                if msg.checkpoint_id == self.cp_waiting:
                    self.cp_files[worker] = msg.files
                    self.cp_worker_figures[worker] = msg.report.checkpoint
                    self._progress.set()
            elif isinstance(msg, wire.Restored):
                self._apply(worker, msg.report)
                self._restored.add(worker)
                self._progress.set()
            elif isinstance(msg, wire.Output):
                self._print(msg.text)
            elif isinstance(msg, wire.Failed):
                raise WorkerDied(f"worker {worker} failed: {msg.message}")
            else:
                raise WorkerDied(f"unexpected message {type(msg).__name__.upper()} from "
                                 f"worker {worker}")

    def _print(self, text: str) -> None:
        if self._show_progress:
            sys.stderr.write("\r\x1b[K")
        sys.stdout.write(text)
        sys.stdout.flush()

    def _apply(self, worker: int, report: wire.ShardReport) -> None:
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
                self.sessions_ended += len(ended)
            found = news.anomalies
            if found:  # a per-event keyed detector (bspump.anomaly.KeyedAnomalyDetector)
                for key, t, value, mean, std, score in found:
                    self._anomaly(aid, {"key": key, "event_time": t, "value": value,
                                        "mean": mean, "std": std, "score": score})
                self.keyed_anomalies[aid] = self.keyed_anomalies.get(aid, 0) + len(found)
        for d in report.dead:
            self.outputs.dead_letter(d.reason, d.record, worker=worker,
                                     processor=d.processor, event_time=d.event_time)
            self.dead += 1
        if report.open_sessions is not None:
            self.open_sessions[worker] = report.open_sessions
        if report.events_in is not None:
            self.processed[worker] = report.events_in
            self.batched[worker] = report.events_batched
            self.failed[worker] = report.events_failed

    def _merge(self, watermark: float) -> list[dict[str, Any]]:
        """Write the windows every worker has closed at ``watermark``; return the rows."""
        if watermark <= self.merged_w:
            return []
        written: list[dict[str, Any]] = []
        for aid, merger in self.mergers.items():
            rows = merger.emit(watermark)
            if rows:
                out = self.outputs.windows(aid)
                for row in rows:
                    out.write(row)
                self.window_rows += len(rows)
                written.extend({"analyzer": aid, **row} for row in rows)
                self._remember_windows(aid, rows)
                detector = self.anomalies.get(aid)
                if detector is not None:
                    found = detector.check(rows)
                    for anomaly in found:
                        self._anomaly(aid, row_of(anomaly))
        self.outputs.flush()
        self.merged_w = watermark
        self._progress.set()
        return written

    def _anomaly(self, aid: str, row: dict[str, Any]) -> None:
        """Write an anomaly, keep it for the page, queue it for the sink's topic."""
        self.outputs.anomalies(aid).write(row)
        self._recent_anomalies.append({**row, "analyzer": aid})
        self._unpublished_anomalies.append(row)

    async def _publish(self, rows: list[dict[str, Any]]) -> None:
        """Hand merged window rows and new anomalies to the sink when it publishes them."""
        publish = getattr(self.pipeline.Sink, "publish_windows", None)
        if rows and publish is not None:
            await publish(rows)
        anomalies, self._unpublished_anomalies = self._unpublished_anomalies, []
        publish = getattr(self.pipeline.Sink, "publish_anomalies", None)
        if anomalies and publish is not None:
            await publish(anomalies)

    # -- sending -----------------------------------------------------------------------------------

    async def _wait(self, ready: Any, stoppable: bool = True) -> None:
        """Wait until ``ready()`` holds; a failed receiver ends the wait with its error."""
        while not ready():
            if self._failure is not None:
                raise self._failure
            if stoppable and self._stop.is_set():
                raise asyncio.CancelledError
            self._progress.clear()
            waiters = {asyncio.create_task(self._progress.wait())}
            if stoppable:
                waiters.add(asyncio.create_task(self._stop.wait()))
            _, pending = await asyncio.wait(waiters, timeout=1.0,
                                            return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()

    async def _send_data(self, transport: Transport, worker: int, times: Any,
                         events: Any) -> None:
        if isinstance(events, EventBatch):
            await transport.send(worker, wire.DataCols(*events.to_wire()))
            self.sent[worker] += len(events)
            return
        size = self.settings.batch_size
        kind = wire.DataRaw if isinstance(events[0], bytes) else wire.Data
        for i in range(0, len(events), size):
            await transport.send(worker, kind(times[i:i + size], events[i:i + size]))
        self.sent[worker] += len(events)

    async def _send_watermark(self, transport: Transport, watermark: float) -> None:
        self.seq += 1
        for w in range(self.workers):
            await transport.send(w, wire.Watermark(self.seq, watermark))
        self.sent_w = watermark

    async def _route(self, transport: Transport, batch: SourceBatch) -> None:
        for raw, reason in batch.dead:
            self.outputs.dead_letter(reason, raw)
        self.dead += len(batch.dead)
        self.dead_input += len(batch.dead)
        self.records_read += len(batch) + len(batch.dead)
        now = None if self.event_time else time.time()
        jumps_before = self.intake.jumps.counts()
        if batch.columns is not None:
            result = self.intake.feed_columns(batch.columns, now)
        elif batch.raw is not None:
            result = self.intake.feed_raw(batch.raw, batch.where, now)
        else:
            # Where each record came from, when the source said (a user's source may not).
            known = batch.raw_origin or batch.raw_places is not None
            result = self.intake.feed(batch.records, now, batch.where if known else None)
        if self.intake.jumps.counts() != jumps_before:
            self._note_jumps(jumps_before)
        lost = len(batch) - result.accepted - len(result.dead) - len(result.late) - result.held
        if lost:
            # Never expected: a route that drops records without a word. Say so now; the
            # ledger (read - dead - late - routed - held) then fails the run at its end.
            log.error("%d records of a source batch were neither routed, late, held nor dead "
                      "letters (position %s)", lost, json.dumps(batch.position))
        await self._deliver(transport, result)
        self.position = batch.position

    async def _deliver(self, transport: Transport, result: IntakeResult) -> None:
        """Write what the intake refused, send the rest to the workers in order."""
        for r in result.dead:
            self.outputs.dead_letter(r.reason, r.record)
        self.dead += len(result.dead)
        self.dead_input += len(result.dead)
        for r in result.late:
            record = late_record(r.record) if isinstance(r.record, bytes) else r.record
            self.outputs.late(record, r.event_time, self.intake.watermark)
        self.late += len(result.late)
        lag = self.timing.max_lag
        for chunk in result.chunks:
            # Not stoppable: a stop lands between source batches, where the position is exact.
            await self._wait(lambda: not self.sent_w - self.merged_w > lag, stoppable=False)
            for w in range(self.workers):
                if chunk.events[w]:
                    await self._send_data(transport, w, chunk.times[w], chunk.events[w])
            if chunk.watermark is not None:
                await self._send_watermark(transport, chunk.watermark)

    # -- the run --------------------------------------------------------------------------------

    async def _read(self, queue: asyncio.Queue[Any]) -> None:
        source = self.pipeline.Source
        assert source is not None
        try:
            async for batch in source.batches():
                await queue.put(batch)
        finally:
            await queue.put(_EOF)

    def _next_tick_in(self) -> float | None:
        if self.event_time:
            return None
        tick = self.timing.tick
        now = time.time()
        return max(0.0, (math.floor(now / tick) + 1) * tick - now)

    async def run(self, transport: Transport) -> int:
        """Run to the end of the input (or a stop signal); return the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await self._await_hellos(transport)
        except (WorkerDied, ContractError, TimeoutError) as e:
            log.error("%s", e)
            return exits.FAILED
        log.info("layout: %s; shard key %s", ", ".join(
            f"worker {w} key groups {r.start}-{r.stop - 1}"
            for w in range(self.workers) for r in [self.layout.groups_of(w)]),
            self.settings.routing.shard_key.describe())
        receiver = asyncio.create_task(self._receive(transport))
        receiver.add_done_callback(self._receiver_done)
        try:
            await self._restore_or_start_fresh(transport)
        except (ClusterError, OSError, asyncio.CancelledError) as e:
            log.error("cannot restore: %s", e)
            receiver.cancel()
            return exits.FAILED
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
        reader = asyncio.create_task(self._read(queue))
        sampler = asyncio.create_task(self._sample())
        server = await self._start_http()
        self.state = "running"
        rc = exits.OK
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                stopper = asyncio.ensure_future(self._stop.wait())
                done, _ = await asyncio.wait({getter, stopper}, timeout=self._next_tick_in(),
                                             return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                if self._failure is not None:
                    raise self._failure
                if self._stop.is_set():
                    rc = exits.STOPPED
                    break
                if getter in done:
                    item = getter.result()
                    if item is _EOF:
                        reader.result() if reader.done() else None
                        break
                    await self._route(transport, item)
                    if self._checkpoint_due():
                        await self._checkpoint(transport)
                if not self.event_time:
                    w = self.intake.clock(time.time())
                    if w is not None:
                        await self._send_watermark(transport, w)
            if rc == exits.OK:
                await self._finish(transport)
            elif self.cp_dir is not None and self._failure is None:
                await asyncio.wait_for(self._checkpoint(transport),
                                       FINAL_CHECKPOINT_TIMEOUT)
                log.info("final checkpoint %d written", self.cp_next_id - 1)
        except TimeoutError:
            log.error("final checkpoint not done within %.0f s: the previous one stays",
                      FINAL_CHECKPOINT_TIMEOUT)
            rc = exits.STOPPED
        except asyncio.CancelledError:
            rc = exits.STOPPED
        except (ClusterError, OSError) as e:
            log.error("%s", e)
            rc = exits.FAILED
        finally:
            reader.cancel()
            if rc != exits.OK:
                for w in range(self.workers):
                    try:
                        await asyncio.wait_for(transport.send(w, wire.Stop()), 0.5)
                    except (TimeoutError, Exception):
                        pass
            receiver.cancel()
            sampler.cancel()
            self.outputs.close()
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                exc = reader.exception()
                log.error("source failed: %s: %s", type(exc).__name__, exc)
                rc = exits.FAILED
            if rc == exits.OK:
                problems = self._closing_problems()
                for problem in problems:
                    log.error("%s", problem)
                if problems:
                    rc = exits.LEDGER
            self.state = {exits.OK: "finished", exits.STOPPED: "stopped"}.get(rc, "failed")
            if server is not None:
                await server.close()
        if rc == exits.OK:
            self._write_report()
        self._summary(rc)
        return rc

    def _receiver_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._failure = task.exception()
            self._progress.set()

    async def _finish(self, transport: Transport) -> None:
        jumps_before = self.intake.jumps.counts()
        await self._deliver(transport, self.intake.release_held())
        self._note_jumps(jumps_before)
        if self.event_time:
            last = self.intake.max_time if math.isfinite(self.intake.max_time) else 0.0
        else:
            last = time.time()
        self.seq += 1
        # A partition task checkpoints its final state (sink file lengths, and nothing
        # open) in case its partition moves to another host and more input comes.
        folder = None
        if self.cp_dir is not None and self.settings.partition is not None:
            self._check_still_owner()
            folder = checkpoint.create_folder(self.cp_dir, self.cp_next_id)
        self.cp_files = {}
        for w in range(self.workers):
            await transport.send(w, wire.End(self.seq, last, str(folder) if folder else None))
        await self._wait(lambda: all(self.done))
        await self._publish(self._merge(math.inf))
        for mid in self.app.Matrices:
            save_npy(self.settings.output_dir / f"{mid}.npy", self._summed(mid),
                     self.settings.file_mode)
        self._save_persistent()
        if folder is not None:
            self._finished_checkpoint(folder)
        elif self.cp_dir is not None:
            # A finished run starts afresh next time; only a stopped or crashed one resumes.
            for old in checkpoint.scan(self.cp_dir):
                shutil.rmtree(old.path, ignore_errors=True)

    # -- progress and summary ------------------------------------------------------------------

    def _remember_windows(self, aid: str, rows: list[dict[str, Any]]) -> None:
        by_period: dict[Any, dict[Any, Any]] = {}
        for row in rows:
            by_period.setdefault(row["window_start"], {})[row["key"]] = row["count"]
        history = self._window_history[aid]
        for start, counts in by_period.items():
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:TOP_KEYS]
            history.append({"window_start": start, "total": sum(counts.values()),
                            "keys": len(counts), "top": [[str(k), v] for k, v in top]})

    async def _sample(self) -> None:
        """Every second: throughput history, the progress line; Kafka lag every 5 s."""
        source = self.pipeline.Source
        lag_of = getattr(source, "lag", None)
        probe = getattr(source, "probe", None)
        tick = 0
        dead_seen = self.dead
        late_window: deque[tuple[int, int]] = deque(maxlen=11)
        late_quiet_until = 0
        share = self.settings.routing.late_warning_share
        while True:
            self._history.append((time.monotonic(), time.time(), self.records_read,
                                  list(self.processed), list(self.open_sessions)))
            if tick % 10 == 9 and self.dead > dead_seen:
                log.warning("dead letters: %d in the last 10 s (%d in all) -> %s",
                            self.dead - dead_seen, self.dead, self.outputs.dead_letters.path)
                dead_seen = self.dead
            # Late share over the last 10 s, checked every second, said at most every 10 s.
            late_window.append((self.late, self.records_read))
            late = self.late - late_window[0][0]
            read = self.records_read - late_window[0][1]
            if late and late > share * read and tick >= late_quiet_until:
                self._warn("late events: %d of the %d records read in the last %d s (%.0f%%, "
                           "more than late_warning_share = %g) were behind the watermark; "
                           "allowed_lateness = %g s -> %s", late, read, len(late_window) - 1,
                           100 * late / read, share, self.settings.routing.allowed_lateness,
                           self.outputs.late_events.path)
                late_quiet_until = tick + 10
            self._check_silence()
            if self._show_progress:
                self._print_progress()
            if probe is not None and tick % PROBE_EVERY == 0:
                await self._probe_source(probe)
            if lag_of is not None and tick % 5 == 0 and self._source_down is None:
                with contextlib.suppress(Exception):
                    self.kafka_lag = await lag_of()
            tick += 1
            await asyncio.sleep(1.0)

    async def _probe_source(self, probe: Any) -> None:
        """Say once when the source's brokers stop answering, and when they answer again."""
        problem = await probe()
        config = getattr(self.pipeline.Source, "connection_config", {})
        servers = config.get("bootstrap_servers", "the source")
        if problem is not None and self._source_down is None:
            self._source_down = time.monotonic()
            log.warning("Kafka at %s does not answer (%s); retrying in %.1f s", servers,
                        problem, PROBE_EVERY)
        elif problem is None and self._source_down is not None:
            log.info("Kafka at %s answers again after %.1f s", servers,
                     time.monotonic() - self._source_down)
            self._source_down = None

    def _check_silence(self) -> None:
        """Kill a worker that said nothing for ``worker_timeout``: stopped (SIGSTOP, swapped
        out) or wedged in a call. The supervisor then restarts the run from the last
        checkpoint, as after any death."""
        limit = self.settings.worker_timeout
        if not limit or self.state != "running":
            return
        now = time.monotonic()
        for w, heard in enumerate(self.last_heard):
            pid = self.worker_pids[w]
            if (pid is None or pid == os.getpid() or self.done[w] or w in self.stalled
                    or now - heard <= limit):
                continue
            self.stalled.add(w)
            self._warn("worker %d (pid %d) made no progress for %.0f s (worker_timeout = %g s): "
                       "stopped or wedged; killing it so the run restarts from the last "
                       "checkpoint", w, pid, now - heard, limit)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _warn(self, message: str, *args: Any) -> None:
        """A warning for the log and for the page (the newest few are in the snapshot)."""
        log.warning(message, *args)
        self._warnings.append({"time": time.time(), "message": message % args})

    def _note_jumps(self, before: dict[str, int]) -> None:
        """Log what the far-ahead rule (cluster.jumps) did with the last batch."""
        after = self.intake.jumps.counts()
        guard = self.intake.jumps
        if after["held"] and not before["held"]:
            self._warn("a record's event time is more than max_time_jump = %g s ahead of the "
                       "stream: held until %d records confirm or refute the jump",
                       guard.max_jump, guard.confirm)
        if after["refused"] > before["refused"]:
            self._warn("%d records refused as timestamp too far ahead (the stream did not "
                       "confirm the jump) -> %s", after["refused"] - before["refused"],
                       self.outputs.dead_letters.path)
        if after["released"] > before["released"]:
            log.info("the stream jumped ahead: %d held records released",
                     after["released"] - before["released"])

    def _rates(self, span: float = 5.0) -> tuple[float, list[float]]:
        """Records/s read and events/s per worker over the last ``span`` seconds."""
        if len(self._history) < 2:
            return 0.0, [0.0] * self.workers
        t1, _, n1, w1, _ = self._history[-1]
        t0, _, n0, w0, _ = self._history[0]
        for sample in reversed(self._history):
            if t1 - sample[0] >= span:
                t0, _, n0, w0, _ = sample
                break
        dt = max(t1 - t0, 1e-9)
        return (n1 - n0) / dt, [(b - a) / dt for a, b in zip(w0, w1, strict=True)]

    def _print_progress(self) -> None:
        rate, per = self._rates()
        workers = "  ".join(f"w{w} {r:,.0f}/s" for w, r in enumerate(per))
        cp = f"  checkpoint {self.cp_last.id}" if self.cp_last else ""
        sys.stderr.write(f"\r\x1b[K{self.records_read:,} events  {rate:,.0f}/s  {workers}  "
                         f"watermark {_fmt_time(self.intake.watermark)}{cp}")
        sys.stderr.flush()

    def matrix_view(self, mid: str, max_cells: int = 200 * 200) -> dict[str, Any]:
        """A merged matrix for the page: 2-D, summed into blocks when larger than max_cells."""
        total = self._summed(mid)
        data = total.reshape(total.shape[0], -1) if total.ndim != 2 else total
        rows, cols = data.shape
        step = max(1, math.ceil(math.sqrt(rows * cols / max_cells)))
        if step > 1:
            r2, c2 = -(-rows // step) * step, -(-cols // step) * step
            padded = np.zeros((r2, c2), dtype=np.float64)
            padded[:rows, :cols] = data
            data = padded.reshape(r2 // step, step, c2 // step, step).sum(axis=(1, 3))
        return {"id": mid, "shape": list(total.shape), "block": step,
                "sum": float(total.sum()), "max": float(data.max()) if data.size else 0.0,
                "data": np.asarray(data, dtype=np.float64).round(3).tolist()}

    def snapshot(self) -> Snapshot:
        """Every figure of the running cluster, for /metrics, status, the page, the report."""
        rate, per = self._rates()
        now = time.time()
        watermark = self.intake.watermark if math.isfinite(self.intake.watermark) else None
        quiet = [time.monotonic() - heard for heard in self.last_heard]
        limit = self.settings.worker_timeout
        stalled_after = max(2.0, min(STALLED_AFTER, limit / 2)) if limit else STALLED_AFTER
        workers = [WorkerFigures(
            worker=w, events_in=self.sent[w], events_out=self.processed[w],
            pid=self.worker_pids[w], silent_s=round(quiet[w], 1),
            state="done" if self.done[w] else
            ("stalled" if w in self.stalled or quiet[w] > stalled_after else "running"),
            events_per_s=round(per[w], 1),
            queue_depth=max(0, self.sent[w] - self.processed[w]),
            open_sessions=self.open_sessions[w],
            key_groups=[self.layout.groups_of(w).start, self.layout.groups_of(w).stop - 1])
            for w in range(self.workers)]
        cp = self.cp_last
        return Snapshot(
            pipeline=self.pipeline.Id,
            run_id=self.run_info.run_id,
            state=self.state,
            time=now,
            uptime_s=round(time.monotonic() - self.started, 3),
            event_time=self.event_time,
            records_read=self.records_read,
            events_per_s=round(rate, 1),
            workers=workers,
            watermark=watermark,
            watermark_lag_s=None if watermark is None else round(now - watermark, 3),
            dead_letters=self.dead,
            late_events=self.late,
            ledger=self.ledger().as_dict(),
            time_jumps=self.intake.jumps.counts(),
            warnings=list(self._warnings),
            anomalies=self.anomaly_counts(),
            recent_anomalies=list(self._recent_anomalies),
            window_rows=self.window_rows,
            sessions_ended=self.sessions_ended,
            restarts=self.restarts,
            kafka_lag=dict(self.kafka_lag),
            checkpoint=CheckpointStatus(
                taken=self.cp_taken, last_id=cp.id if cp else None,
                age_s=round(now - cp.at, 3) if cp else None,
                duration_s=cp.duration_s if cp else None,
                stall_s=cp.stall_s if cp else None,
                worker_write_s=cp.worker_write_s if cp else None,
                bytes=cp.bytes if cp else None,
                state_bytes=cp.state_bytes if cp else None,
                enabled=self.cp_dir is not None),
            checkpoints=list(self._checkpoint_history),
            history=[HistorySample(t=wall, records_read=n, workers=list(w),
                                   open_sessions=list(sessions))
                     for _, wall, n, w, sessions in self._history],
            windows={aid: list(h) for aid, h in self._window_history.items()},
            matrices=[self.matrix_view(mid) for mid in self.app.Matrices],
        )

    def summary(self, rc: int) -> Summary:
        """Figures of the run, as written to ``summary.json``."""
        elapsed = time.monotonic() - self.started
        return Summary(
            pipeline=self.pipeline.Id,
            workers=self.workers,
            exit_code=rc,
            elapsed_s=round(elapsed, 3),
            records_read=self.records_read,
            events_routed=sum(self.sent),
            events_per_s=round(self.records_read / elapsed, 1) if elapsed > 0 else None,
            dead_letters=self.dead,
            late_events=self.late,
            per_worker_events=list(self.processed),
            events_processed=self.restored_events + sum(self.processed),
            events_batch_path=sum(self.batched),
            restored_from_checkpoint=self.restored_from,
            checkpoints_taken=self.cp_taken,
            last_checkpoint=self.cp_last,
            window_rows=self.window_rows,
            sessions_ended=self.sessions_ended,
            watermark=self.intake.watermark if math.isfinite(self.intake.watermark) else None,
            source_position=self.position,
            ledger=self.ledger().as_dict(),
            time_jumps=self.intake.jumps.counts(),
            anomalies=self.anomaly_counts(),
            result_files=self.outputs.sizes(),
        )

    def _summary(self, rc: int) -> None:
        s = self.summary(rc)
        try:
            self.outputs.write_summary(s.to_dict())
        except OSError as e:
            log.error("cannot write summary: %s", e)
        if self._show_progress:
            sys.stderr.write("\r\x1b[K")
        state = "finished" if rc == exits.OK else ("stopped" if rc == exits.STOPPED else "FAILED")
        ledger = self.ledger()
        mark = "closes" if ledger.closes else (
            "does NOT close" if rc in (exits.OK, exits.LEDGER) else "open: the run stopped")
        out = self.settings.output_dir
        lines = [
            f"{text_prefix('coordinator')}{state} in {s.elapsed_s:.2f} s, "
            f"{self.workers} workers",
            f"  events read   {s.records_read:>12,}  ({s.events_per_s or 0:,.0f}/s)",
            f"  dead letters  {self.dead:>12,}" + (f"  -> {out / 'dead-letters.jsonl'}"
                                                  if self.dead else ""),
            f"  late events   {self.late:>12,}" + (f"  -> {out / 'late-events.jsonl'}"
                                                  if self.late else ""),
            *(f"  worker {w:<6} {n:>12,} events" for w, n in enumerate(self.processed)),
            f"  ledger        {ledger.equation()}  ({mark})",
            f"  window rows   {self.window_rows:>12,}   sessions ended {self.sessions_ended:,}",
            f"  results in {out}",
        ]
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
