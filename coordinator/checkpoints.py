"""Checkpoint orchestration: when to take one, the barrier, the manifest, the restore.

The on-disk format (folders, manifests, the workers' files, verification) is
:mod:`cluster.checkpoint`; this module decides when the coordinator takes a
checkpoint, drives the barrier through the workers, writes the manifest of the moment,
and at start resumes from the newest complete checkpoint or starts afresh.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

from cluster import checkpoint, wire
from cluster.config import ClusterSettings
from cluster.errors import CheckpointError, ClusterError
from cluster.figures import CheckpointTaken
from cluster.intake import Intake
from cluster.logs import MEMBER_ENV
from cluster.manifest import CheckpointFigures, Counters, FileEntry, IntakeState, Manifest
from cluster.outputs import RESULT_KINDS, RunOutputs
from coordinator.ledger import Counts
from coordinator.merge import Merger
from coordinator.router import Router
from coordinator.transport import Transport
from coordinator.wait import Waiter
from coordinator.watermark import Frontier, fmt_time

log = logging.getLogger("bspump-cluster.coordinator")

CHECKPOINT_HISTORY = 50  # checkpoints kept for the page


class Checkpoints:
    """Takes the run's checkpoints and restores the newest at start."""

    def __init__(self, settings: ClusterSettings, pipeline: Any, outputs: RunOutputs,
                 intake: Intake, counts: Counts, frontier: Frontier, router: Router,
                 merger: Merger, waiter: Waiter, event_time: bool, fresh: bool = False) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.outputs = outputs
        self.intake = intake
        self.counts = counts
        self.frontier = frontier
        self.router = router
        self.merger = merger
        self.waiter = waiter
        self.event_time = event_time
        self.fresh = fresh
        self.workers = counts.workers
        self.dir = settings.checkpoint_dir
        self.next_id = 1
        self.waiting: int | None = None  # the checkpoint whose barrier is out
        # Per worker, of the checkpoint or the end (None: a worker's end without a folder).
        self.files: dict[int, dict[str, FileEntry] | None] = {}
        self.worker_figures: dict[int, wire.WriteFigures | None] = {}
        self.taken = 0
        self.last: CheckpointTaken | None = None
        self.history: deque[CheckpointTaken] = deque(maxlen=CHECKPOINT_HISTORY)
        self.restored_from: int | None = None
        self._restored: set[int] = set()
        self._clock = time.monotonic()
        self._records = 0

    # -- what the workers say ---------------------------------------------------------------

    def on_checkpointed(self, worker: int, cp_id: int, files: dict[str, FileEntry],
                        report: wire.ShardReport) -> None:
        """A worker wrote its files for checkpoint ``cp_id``."""
        if cp_id == self.waiting:
            self.files[worker] = files
            self.worker_figures[worker] = report.checkpoint
            self.waiter.notify()

    def on_restored(self, worker: int) -> None:
        """A worker loaded its state from the checkpoint."""
        self._restored.add(worker)
        self.waiter.notify()

    def on_done(self, worker: int, files: dict[str, FileEntry] | None) -> None:
        """A worker reached the end (its files: of the final checkpoint, if any)."""
        self.files[worker] = files

    # -- start ----------------------------------------------------------------------------

    def prepare_output(self) -> None:
        """Create the output folder and clear the result files of an earlier run."""
        out = self.settings.output_dir
        out.mkdir(parents=True, exist_ok=True)
        pid = self.pipeline.Id
        stale = [*(p for kind in RESULT_KINDS for p in out.glob(f"{pid}.*.{kind}.jsonl")),
                 out / "dead-letters.jsonl", out / "late-events.jsonl", out / "summary.json",
                 *(out / f"{mid}.npy" for mid in self.merger.matrices)]
        for path in stale:
            path.unlink(missing_ok=True)

    async def restore_or_start_fresh(self, transport: Transport) -> None:
        """Resume from the newest complete checkpoint, or clear old results and start."""
        if self.dir is None:
            self.prepare_output()
            return
        if self.fresh:
            for old in checkpoint.scan(self.dir):
                shutil.rmtree(old.path, ignore_errors=True)
        cp = checkpoint.newest_complete(self.dir)
        self.next_id = checkpoint.next_id(self.dir)
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
        self.frontier.restore(self.intake.watermark if self.event_time else -math.inf)
        c, counts = m.counters, self.counts
        counts.records_read, counts.dead, counts.late = c.records_read, c.dead, c.late
        counts.sessions_ended, counts.window_rows = c.sessions_ended, c.window_rows
        counts.restored_events = c.events_processed
        # At a checkpoint every routed event has been handled (the barrier follows them).
        counts.restored_routed = c.events_processed if c.routed is None else c.routed
        counts.restored_failed = 0 if c.failed is None else c.failed
        counts.dead_input = c.dead - counts.restored_failed if c.dead_input is None \
            else c.dead_input
        self.merger.set_state(checkpoint.read_coordinator_state(cp.path))
        self.router.position = m.position
        if self.router.position is not None:
            assert self.pipeline.Source is not None
            self.pipeline.Source.seek(self.router.position)
        for w in range(self.workers):
            await transport.send(w, wire.Restore(str(cp.path), m.workers))
        await self.waiter.until(lambda: len(self._restored) == self.workers)
        self.restored_from = cp.id
        position, watermark = json.dumps(self.router.position), fmt_time(self.intake.watermark)
        log.info("restored checkpoint %d (%s workers -> %d): source position %s, watermark %s",
                 cp.id, m.workers, self.workers, position, watermark,
                 extra={"event": "restore" if m.workers == self.workers else "rebalance",
                        "checkpoint_id": cp.id, "workers_before": m.workers,
                        "workers": self.workers, "position": position,
                        "watermark": watermark})
        if self.settings.partition is not None:
            owner, note = m.owner or "-", " (finished)" if m.finished else ""
            log.info("partition %s resumes from checkpoint %d written by %s%s",
                     self.settings.partition, cp.id, owner, note,
                     extra={"event": "partition_resume", "partition": self.settings.partition,
                            "checkpoint_id": cp.id, "written_by": owner, "note": note})

    # -- while running ----------------------------------------------------------------------

    def due(self) -> bool:
        """Whether ``checkpoint_interval`` passed or ``checkpoint_events`` were read."""
        if self.dir is None:
            return False
        return (time.monotonic() - self._clock >= self.settings.checkpoint_interval
                or self.counts.records_read - self._records >= self.settings.checkpoint_events)

    async def take(self, transport: Transport) -> None:
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
        assert self.dir is not None
        began = time.monotonic()
        self.check_still_owner()
        cp_id = self.next_id
        self.next_id += 1
        folder = checkpoint.create_folder(self.dir, cp_id)
        self.files = {}
        self.worker_figures = {}
        self.waiting = cp_id
        for w in range(self.workers):
            await transport.send(w, wire.Barrier(cp_id, str(folder)))
        # Not stoppable: a stop waits for the checkpoint in progress (and takes its own).
        await self.waiter.until(lambda: len(self.files) == self.workers, stoppable=False)
        self.waiting = None
        acked = time.monotonic() - began
        manifest = self.manifest(cp_id, folder)
        size = sum(meta.size for meta in manifest.files.values())
        manifest.figures = figures = CheckpointFigures(
            # Every worker writes its whole state at the barrier, standing still meanwhile.
            worker_write_s=max((f.write_s if f else 0.0
                                for f in self.worker_figures.values()), default=0.0),
            barrier_to_acks_s=round(acked, 6), bytes_written=size, state_bytes=size)
        self.check_still_owner()
        checkpoint.write_manifest(folder, manifest)
        self.merger.save_persistent()
        checkpoint.prune(self.dir, self.settings.checkpoints_kept, cp_id)
        commit = getattr(self.pipeline.Source, "commit", None)
        if commit is not None and self.router.position is not None:
            await commit(self.router.position)
        self.taken += 1
        took = time.monotonic() - began
        # Routing stood still from the barrier to here: that is the stream's stall.
        self.last = CheckpointTaken(id=cp_id, at=time.time(), duration_s=round(took, 4),
                                    bytes=size, stall_s=round(took, 4),
                                    worker_write_s=figures.worker_write_s, state_bytes=size)
        self.history.append(self.last)
        log.info("checkpoint %d: %.1f MB in %.3f s", cp_id, size / 1e6, took,
                 extra={"event": "checkpoint", "checkpoint_id": cp_id, "mb": size / 1e6,
                        "duration_s": took})
        self._clock = time.monotonic()
        self._records = self.counts.records_read

    def manifest(self, cp_id: int, folder: Path, finished: bool = False) -> Manifest:
        """The manifest of checkpoint ``cp_id``: this moment, the workers' files and the
        coordinator's own state (written into ``folder`` now)."""
        own = checkpoint.write_coordinator_state(folder, self.merger.state()) \
            if self.merger.has_state() else {}
        counts = self.counts
        return Manifest(
            id=cp_id,
            created=time.time(),
            pipeline=self.pipeline.Id,
            workers=self.workers,
            key_groups=self.settings.key_groups,
            position=self.router.position,
            intake=IntakeState(**self.intake.state()),
            counters=Counters(records_read=counts.records_read, dead=counts.dead,
                              late=counts.late, sessions_ended=counts.sessions_ended,
                              window_rows=counts.window_rows,
                              events_processed=counts.handled(),
                              routed=counts.routed(),
                              failed=counts.failed_total(),
                              dead_input=counts.dead_input),
            outputs=self.outputs.lengths(),
            files={**{name: meta for files in self.files.values()
                      for name, meta in (files or {}).items()}, **own},
            partition=self.settings.partition,
            owner=os.environ.get(MEMBER_ENV) or socket.gethostname(),
            finished=finished,
        )

    def check_still_owner(self) -> None:
        """A partition task stops when another host has written to its checkpoint folder.

        Hosts stop their tasks before Kafka moves a partition, so this only trips when a
        host lost the group without noticing (cut off from Kafka, frozen): its task must
        not write over the new owner's checkpoints.
        """
        if self.settings.partition is None or self.dir is None:
            return
        for cp in checkpoint.scan(self.dir):
            if cp.id >= self.next_id:  # created by a writer that started after us
                m = checkpoint.verify(cp, checksums=False).manifest
                owner = (m.owner if m else None) or "?"
                raise ClusterError(
                    f"partition {self.settings.partition} moved to another host: checkpoint "
                    f"{cp.id} in {self.dir} is not ours (written by {owner});"
                    " stopping without writing")

    # -- the end ----------------------------------------------------------------------------

    def final_folder(self) -> Path | None:
        """Where the workers write their final state at the end, or None.

        A partition task checkpoints its final state (sink file lengths, and nothing
        open) in case its partition moves to another host and more input comes.
        """
        self.files = {}
        if self.dir is None or self.settings.partition is None:
            return None
        self.check_still_owner()
        return checkpoint.create_folder(self.dir, self.next_id)

    def finish(self, folder: Path | None) -> None:
        """After the end: complete the final checkpoint, or drop the checkpoints."""
        if folder is not None:
            self._finished_checkpoint(folder)
        elif self.dir is not None:
            # A finished run starts afresh next time; only a stopped or crashed one resumes.
            for old in checkpoint.scan(self.dir):
                shutil.rmtree(old.path, ignore_errors=True)

    def _finished_checkpoint(self, folder: Path) -> None:
        """A partition task reached the end: results complete, position at the end.

        The partition may move to another host later; restoring this checkpoint keeps
        the results and goes on from the end (every window was closed at the end).
        """
        assert self.dir is not None
        cp_id = self.next_id
        self.next_id += 1
        checkpoint.write_manifest(folder, self.manifest(cp_id, folder, finished=True))
        checkpoint.prune(self.dir, self.settings.checkpoints_kept, cp_id)
        position = json.dumps(self.router.position)
        log.info("partition %s finished at %s (checkpoint %d)", self.settings.partition,
                 position, cp_id,
                 extra={"event": "partition_finished", "partition": self.settings.partition,
                        "position": position, "checkpoint_id": cp_id})
