"""The coordinator's run loop: reads the source, routes events, merges the shards.

One asyncio loop does three things at once: it reads source batches (a task
feeding a small queue), routes them (:mod:`coordinator.router`) to the workers'
channels, and receives the workers' messages. When every worker has acked a
watermark (:mod:`coordinator.watermark`), the windows that closed by then are read in
place from the workers' shared memory and merged into the output
(:mod:`coordinator.merge`). Checkpoints (:mod:`coordinator.checkpoints`) are taken
between source batches; the figures (:mod:`coordinator.status`) are sampled each
second (:mod:`coordinator.monitor`) and served over HTTP (:mod:`coordinator.web`).

Flow control: data is sent only while the newest watermark sent is at most
``max_lag`` seconds ahead of the newest one every worker has acked, so a worker
never reuses a window slot the coordinator has not read yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import signal
import socket
import sys
import time
from typing import Any

from bspump.application import ROLE_COORDINATOR, RunInfo
from cluster import exits, wire
from cluster.config import ClusterSettings
from cluster.errors import ClusterError, ContractError, WorkerDied
from cluster.figures import Snapshot
from cluster.intake import Intake
from cluster.layout import Layout
from cluster.loader import load_pipeline
from cluster.outputs import RunOutputs
from cluster.records import Limits
from coordinator import web
from coordinator.checkpoints import Checkpoints
from coordinator.ledger import Counts
from coordinator.liveness import Liveness
from coordinator.merge import Merger
from coordinator.monitor import Monitor
from coordinator.router import Router
from coordinator.status import Status, Warnings
from coordinator.transport import Transport
from coordinator.wait import Waiter
from coordinator.watermark import Frontier, next_tick_in, timing_of

log = logging.getLogger("bspump-cluster.coordinator")

HELLO_TIMEOUT = 60.0
FINAL_CHECKPOINT_TIMEOUT = 3.0
_EOF = object()


class Coordinator:
    """Routes one pipeline's events to its workers and merges their state."""

    def __init__(self, settings: ClusterSettings, run_id: str, workers: int,
                 fresh: bool = False, restarts: int = 0) -> None:
        self.settings = settings
        self.workers = workers
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
        self.counts = Counts(workers)
        self.frontier = Frontier(workers)
        self.waiter = Waiter()
        self.warnings = Warnings()
        self.liveness = Liveness(workers, settings.worker_timeout)
        self.router = Router(self.intake, self.outputs, self.counts, self.frontier,
                             self.timing, self.waiter, self.warnings.warn,
                             settings.batch_size, self.event_time)
        self.merger = Merger(self.pipeline, self.app.Matrices, self.outputs, self.counts,
                             self.frontier, self.waiter, settings.file_mode)
        self.checkpoints = Checkpoints(settings, self.pipeline, self.outputs, self.intake,
                                       self.counts, self.frontier, self.router, self.merger,
                                       self.waiter, self.event_time, fresh)
        show_progress = settings.progress == "yes" or (
            settings.progress == "auto" and sys.stderr.isatty())
        self.status = Status(self.pipeline.Id, self.run_info, self.layout, self.intake,
                             self.outputs, self.counts, self.liveness, self.router,
                             self.merger, self.checkpoints, self.warnings, restarts,
                             show_progress)
        self.monitor = Monitor(settings, source, self.outputs, self.counts, self.liveness,
                               self.status)
        self._http_socket: socket.socket | None = None

    def bind_http(self) -> None:
        """Bind the HTTP port now, before any result is touched: a taken port refuses the run."""
        self._http_socket = web.bind(self.settings)

    def snapshot(self) -> Snapshot:
        """Every figure of the running cluster (see :meth:`coordinator.status.Status.snapshot`)."""
        return self.status.snapshot()

    # -- start ----------------------------------------------------------------------------------

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
                self.status.print_output(msg.text)
                continue
            if not isinstance(msg, wire.Hello):
                raise WorkerDied(f"unexpected message {type(msg).__name__.upper()} before hello")
            if msg.version != wire.VERSION:
                raise WorkerDied(f"worker {msg.worker} speaks wire protocol version "
                                 f"{msg.version}, this coordinator {wire.VERSION}: the two "
                                 "come from different installs")
            self.merger.attach(msg.worker, msg.segments)
            self.liveness.hello(msg.worker, msg.pid)
            pending.discard(msg.worker)

    # -- receiving ------------------------------------------------------------------------------

    async def _receive(self, transport: Transport) -> None:
        """Take in every worker message: acks merge windows, the rest feed the waits."""
        merger, checkpoints = self.merger, self.checkpoints
        while True:
            msg = await transport.recv()
            worker = msg.worker
            if not 0 <= worker < self.workers:
                raise ContractError(f"{type(msg).__name__.upper()}: field \"worker\" is "
                                    f"{worker}, not a worker of this run")
            self.liveness.heard(worker)
            if isinstance(msg, wire.Heartbeat):
                continue
            if isinstance(msg, wire.Ack):
                merger.apply(worker, msg.report)
                if msg.seq != -1:
                    assert msg.watermark is not None
                    await merger.publish(merger.merge(self.frontier.ack(worker, msg.watermark)))
            elif isinstance(msg, wire.Done):
                merger.apply(worker, msg.report)
                checkpoints.on_done(worker, msg.files)
                self.liveness.done[worker] = True
                self.waiter.notify()
            elif isinstance(msg, wire.Checkpointed):
                merger.apply(worker, msg.report)
                checkpoints.on_checkpointed(worker, msg.checkpoint_id, msg.files, msg.report)
            elif isinstance(msg, wire.Restored):
                merger.apply(worker, msg.report)
                checkpoints.on_restored(worker)
            elif isinstance(msg, wire.Output):
                self.status.print_output(msg.text)
            elif isinstance(msg, wire.Failed):
                raise WorkerDied(f"worker {worker} failed: {msg.message}")
            else:
                raise WorkerDied(f"unexpected message {type(msg).__name__.upper()} from "
                                 f"worker {worker}")

    def _receiver_done(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.waiter.fail(error)

    # -- the run --------------------------------------------------------------------------------

    async def _read(self, queue: asyncio.Queue[Any]) -> None:
        source = self.pipeline.Source
        assert source is not None
        try:
            async for batch in source.batches():
                await queue.put(batch)
        finally:
            await queue.put(_EOF)

    async def run(self, transport: Transport) -> int:
        """Run to the end of the input (or a stop signal); return the exit code."""
        waiter, status = self.waiter, self.status
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, waiter.stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await self._await_hellos(transport)
        except (WorkerDied, ContractError, TimeoutError) as e:
            log.error("%s", e, extra={"event": "start_failed", "error": str(e)})
            return exits.FAILED
        layout = ", ".join(f"worker {w} key groups {r.start}-{r.stop - 1}"
                           for w in range(self.workers) for r in [self.layout.groups_of(w)])
        shard_key = self.settings.routing.shard_key.describe()
        log.info("layout: %s; shard key %s", layout, shard_key,
                 extra={"event": "layout", "layout": layout, "shard_key": shard_key})
        receiver = asyncio.create_task(self._receive(transport))
        receiver.add_done_callback(self._receiver_done)
        try:
            await self.checkpoints.restore_or_start_fresh(transport)
        except (ClusterError, OSError, asyncio.CancelledError) as e:
            log.error("cannot restore: %s", e,
                      extra={"event": "restore_failed", "error": str(e)})
            receiver.cancel()
            return exits.FAILED
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
        reader = asyncio.create_task(self._read(queue))
        sampler = asyncio.create_task(self.monitor.run())
        server = await web.start(self.settings, status.snapshot, self._http_socket)
        status.state = "running"
        rc = exits.OK
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                stopper = asyncio.ensure_future(waiter.stop.wait())
                done, _ = await asyncio.wait({getter, stopper},
                                             timeout=next_tick_in(self.timing, self.event_time),
                                             return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                if waiter.failure is not None:
                    raise waiter.failure
                if waiter.stop.is_set():
                    rc = exits.STOPPED
                    break
                if getter in done:
                    item = getter.result()
                    if item is _EOF:
                        reader.result() if reader.done() else None
                        break
                    await self.router.route(transport, item)
                    if self.checkpoints.due():
                        await self.checkpoints.take(transport)
                if not self.event_time:
                    w = self.intake.clock(time.time())
                    if w is not None:
                        await self.router.send_watermark(transport, w)
            if rc == exits.OK:
                await self._finish(transport)
            elif self.checkpoints.dir is not None and waiter.failure is None:
                await asyncio.wait_for(self.checkpoints.take(transport),
                                       FINAL_CHECKPOINT_TIMEOUT)
                cp_id = self.checkpoints.next_id - 1
                log.info("final checkpoint %d written", cp_id,
                         extra={"event": "final_checkpoint", "checkpoint_id": cp_id})
        except TimeoutError:
            log.error("final checkpoint not done within %.0f s: the previous one stays",
                      FINAL_CHECKPOINT_TIMEOUT,
                      extra={"event": "final_checkpoint_timeout",
                             "timeout_s": FINAL_CHECKPOINT_TIMEOUT})
            rc = exits.STOPPED
        except asyncio.CancelledError:
            rc = exits.STOPPED
        except (ClusterError, OSError) as e:
            log.error("%s", e, extra={"event": "run_failed", "error": str(e)})
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
                log.error("source failed: %s: %s", type(exc).__name__, exc,
                          extra={"event": "source_failed", "error_type": type(exc).__name__,
                                 "error": str(exc)})
                rc = exits.FAILED
            if rc == exits.OK:
                problems = self._closing_problems()
                for problem in problems:
                    log.error("%s", problem, extra={"event": "run_incomplete",
                                                    "problem": problem})
                if problems:
                    rc = exits.LEDGER
            status.state = {exits.OK: "finished", exits.STOPPED: "stopped"}.get(rc, "failed")
            if server is not None:
                await server.close()
        if rc == exits.OK:
            self._write_report()
        status.finish(rc)
        return rc

    async def _finish(self, transport: Transport) -> None:
        """The end of the input: release held records, end every worker, merge the rest."""
        jumps_before = self.intake.jumps.counts()
        await self.router.deliver(transport, self.intake.release_held())
        self.router.note_jumps(jumps_before)
        if self.event_time:
            last = self.intake.max_time if math.isfinite(self.intake.max_time) else 0.0
        else:
            last = time.time()
        seq = self.frontier.next_seq()
        folder = self.checkpoints.final_folder()
        for w in range(self.workers):
            await transport.send(w, wire.End(seq, last, str(folder) if folder else None))
        await self.waiter.until(lambda: all(self.liveness.done))
        await self.merger.merge_all()
        self.merger.save_matrices(self.settings.output_dir)
        self.merger.save_persistent()
        self.checkpoints.finish(folder)

    def _closing_problems(self) -> list[str]:
        """Why a finished run must not exit 0: a ledger that does not close, lost results."""
        problems = []
        problem = self.status.ledger().problem()
        if problem is not None:
            problems.append(problem)
        problems += self.outputs.missing()
        return problems

    def _write_report(self) -> None:
        """``report.html``: the live page with the final figures, readable offline."""
        try:
            web.write_report(self.status.snapshot().to_dict(),
                             self.settings.output_dir / "report.html", self.settings.file_mode)
        except OSError as e:
            log.error("cannot write report.html: %s", e,
                      extra={"event": "report_failed", "error": str(e)})
