"""The worker: receive batches for its shard, run the whole pipeline, report.

:class:`ShardRuntime` holds the protocol (what a worker does on each message) and
knows nothing of sockets, so the in-process topology runs the very same code.
:func:`serve` is the worker process's loop over ZeroMQ.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

import msgspec
import zmq

from bspump.application import ROLE_SHARD, RunInfo
from bspump.batch import EventBatch
from bspump.processor import RestoreInfo
from cluster import wire
from cluster.checkpoint import FileEntry, ShardReader, ShardWriter
from cluster.config import ClusterSettings
from cluster.errors import ClusterError
from cluster.loader import load_pipeline
from cluster.process import die_with_parent
from cluster.records import preview

log = logging.getLogger("bspump-cluster.worker")

HEARTBEAT_EVERY = 1.0  # seconds without a message to the coordinator before a heartbeat


class ShardRuntime:
    """One shard of the pipeline and its answers to the coordinator's messages."""

    def __init__(self, settings: ClusterSettings, run: RunInfo) -> None:
        self.run = run
        self.worker = run.worker
        self.app, self.pipeline = load_pipeline(settings, run)
        self.pipeline.start(run)
        self.finished = False
        self._decode = msgspec.json.Decoder().decode

    def _decode_each(self, times: list[float], lines: list[bytes]) -> tuple[list[float], list[Any]]:
        """Decode lines one by one: what the coordinator's routing decode skipped over
        (bad UTF-8 or a number out of range in a field it does not read) costs that
        record alone, as a dead letter."""
        kept_times: list[float] = []
        kept: list[Any] = []
        for t, line in zip(times, lines, strict=True):
            try:
                kept.append(self._decode(line))
            except msgspec.DecodeError as e:
                self.pipeline.dead_letters.append({
                    "reason": f"worker {self.worker}: malformed JSON: {e}", "processor": None,
                    "event_time": t, "record": preview(line)})
                # Taken in and dead, for the ledger: routed = taken in, dead = failed.
                self.pipeline.events_in += 1
                self.pipeline.events_failed += 1
                continue
            kept_times.append(t)
        return kept_times, kept

    def hello(self) -> wire.Hello:
        """The first message: who we are, where our shared arrays are, what we speak."""
        # segment_table's lists are [name, shape, dtype]: they encode as Hello's triples.
        table = cast(dict[str, Any], self.app.segment_table())
        return wire.Hello(self.worker, os.getpid(), table, wire.VERSION)

    def _dead(self) -> list[wire.DeadLetter]:
        return [wire.DeadLetter(**d) for d in self.pipeline.take_dead_letters()]

    def _report(self) -> wire.ShardReport:
        p = self.pipeline
        # The analyzers' news go as the dicts they made: they encode as AnalyzerNews does.
        return wire.ShardReport(
            analyzers=p.take_report(), dead=self._dead(), events_in=p.events_in,
            events_out=p.events_out, events_batched=p.events_batched,
            events_failed=p.events_failed,
            open_sessions=sum(getattr(x, "open_sessions", 0) for x in p.Processors))

    def _dead_overflow(self) -> wire.Ack | None:
        """Dead letters go up with the next ack, or now if a run of them piles up."""
        if len(self.pipeline.dead_letters) >= 1000:
            return wire.Ack(self.worker, -1, None, wire.ShardReport(dead=self._dead()))
        return None

    def _write_state(self, folder: str) -> dict[str, FileEntry]:
        """This shard's state into a checkpoint folder; every file's size and crc32."""
        writer = ShardWriter(Path(folder), self.worker)
        self.pipeline.checkpoint(writer)
        return writer.close()

    def handle(self, msg: wire.Down) -> wire.Up | None:
        """Act on one message; return the reply to send, if any."""
        if isinstance(msg, wire.DataCols):
            self.pipeline.process_columns(EventBatch.from_wire([msg.times, msg.columns]))
            return self._dead_overflow()
        if isinstance(msg, wire.DataRaw):
            # One decoder call for the whole message: the coordinator has checked that
            # every line is a JSON object.
            try:
                times, events = msg.times, self._decode(b"[" + b",".join(msg.lines) + b"]")
            except msgspec.DecodeError:
                times, events = self._decode_each(msg.times, msg.lines)
            self.pipeline.process_batch(times, events)
            return self._dead_overflow()
        if isinstance(msg, wire.Data):
            self.pipeline.process_batch(msg.times, msg.events)
            return self._dead_overflow()
        if isinstance(msg, wire.Watermark):
            self.pipeline.advance(msg.watermark)
            return wire.Ack(self.worker, msg.seq, msg.watermark, self._report())
        if isinstance(msg, wire.End):
            self.pipeline.finish(msg.last_time)
            self.finished = True
            # A partition task's final state, else None.
            files = self._write_state(msg.folder) if msg.folder is not None else None
            return wire.Done(self.worker, msg.seq, self._report(), files)
        if isinstance(msg, wire.Barrier):
            began = time.perf_counter()
            files = self._write_state(msg.folder)
            report = self._report()
            # How long this worker stood still writing its state, and how much it wrote.
            report.checkpoint = wire.WriteFigures(round(time.perf_counter() - began, 6),
                                                  sum(f.size for f in files.values()))
            return wire.Checkpointed(self.worker, msg.checkpoint_id, files, report)
        if isinstance(msg, wire.Restore):
            folder = Path(msg.folder)
            readers = [ShardReader(folder, w) for w in range(msg.old_workers)]
            info = RestoreInfo(self.worker, self.run.workers, msg.old_workers,
                               self.run.key_groups)
            self.pipeline.restore(readers, info)
            return wire.Restored(self.worker, self._report())
        assert isinstance(msg, wire.Stop)
        self.finished = True
        return None


class LineCapture(io.TextIOBase):
    """Stands in for stdout on a worker: whole lines go to the coordinator."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._pending = False

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if s:
            self._parts.append(s)
            self._pending = True
        return len(s)

    def take_lines(self, everything: bool = False) -> str:
        """Complete lines written so far (all text when ``everything``)."""
        if not self._pending:
            return ""
        text = "".join(self._parts)
        cut = len(text) if everything else text.rfind("\n") + 1
        self._parts = [text[cut:]] if cut < len(text) else []
        self._pending = bool(self._parts)
        return text[:cut]


def serve(settings: ClusterSettings, run: RunInfo, run_dir: str, parent_pid: int) -> int:
    """The worker process: connect, say hello, handle messages until END or STOP."""
    die_with_parent()  # the supervisor asked already (preexec); this holds if started otherwise
    if os.getppid() != parent_pid:
        return 1
    ctx = zmq.Context()
    down = ctx.socket(zmq.PULL)
    down.setsockopt(zmq.RCVHWM, 16)
    down.connect(f"ipc://{run_dir}/w{run.worker}.ipc")
    up = ctx.socket(zmq.PUSH)
    up.setsockopt(zmq.LINGER, 5000)
    up.connect(f"ipc://{run_dir}/up.ipc")
    capture = LineCapture()
    real_stdout = sys.stdout
    sys.stdout = capture
    try:
        try:
            shard = ShardRuntime(settings, run)
        except Exception as e:
            up.send(wire.pack(wire.Failed(run.worker, f"{type(e).__name__}: {e}")))
            return 1
        up.send(wire.pack(shard.hello()))
        said = time.monotonic()
        poller = zmq.Poller()
        poller.register(down, zmq.POLLIN)
        while not shard.finished:
            if not poller.poll(int(HEARTBEAT_EVERY * 1000)):
                if os.getppid() != parent_pid:
                    return 1
                up.send(wire.pack(wire.Heartbeat(run.worker, shard.pipeline.events_in)))
                said = time.monotonic()
                continue
            try:
                reply = shard.handle(wire.unpack_down(down.recv(copy=False).buffer))
            except ClusterError as e:
                # A refusal the message names (a malformed message, a link at a result
                # path, a bad checkpoint file): one line for the coordinator, no traceback.
                up.send(wire.pack(wire.Failed(run.worker, str(e))))
                return 1
            text = capture.take_lines(everything=shard.finished)
            if text:
                up.send(wire.pack(wire.Output(run.worker, text)))
            if reply is not None:
                up.send(wire.pack(reply))
                said = time.monotonic()
            elif time.monotonic() - said >= HEARTBEAT_EVERY:
                # Busy on data messages, which need no reply: still say we are alive.
                up.send(wire.pack(wire.Heartbeat(run.worker, shard.pipeline.events_in)))
                said = time.monotonic()
        return 0
    finally:
        sys.stdout = real_stdout
        up.close()
        down.close(linger=0)
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    """``python -m workers``: started by the supervisor, never by hand."""
    import argparse
    import signal

    from cluster.process import add_child_arguments, child_settings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    ap = argparse.ArgumentParser(prog="python -m workers")
    add_child_arguments(ap)
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--ring-span", type=float, required=True)
    args = ap.parse_args(argv)
    from cluster.logs import setup as setup_logging
    setup_logging("worker", worker=args.worker)  # text, or JSON (--log-format json on run)
    settings = child_settings(args)
    run = RunInfo(role=ROLE_SHARD, run_id=args.run_id, worker=args.worker, workers=args.workers,
                  output_dir=settings.output_dir,
                  event_time=settings.routing.time_field is not None,
                  ring_span=args.ring_span, max_record_bytes=settings.max_record_bytes,
                  max_record_depth=settings.max_record_depth,
                  key_groups=settings.key_groups)
    started = time.monotonic()
    rc = serve(settings, run, args.run_dir, args.parent)
    took = time.monotonic() - started
    log.debug("exit %d after %.1f s", rc, took,
              extra={"event": "worker_exit", "exit_code": rc, "duration_s": took})
    return rc
