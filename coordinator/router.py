"""The router: source batches in, each worker's share of the events and the watermarks out.

:class:`cluster.intake.Intake` decides which worker owns each record (by its key
group), which records are late or dead letters, and where the watermark advances; the
router writes the refused records, sends the rest in order over each worker's channel
and holds back while the workers lag (flow control, see
:class:`coordinator.watermark.Frontier`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from bspump.batch import EventBatch
from bspump.processor import SourceBatch
from cluster import wire
from cluster.intake import Intake, IntakeResult
from cluster.outputs import RunOutputs
from cluster.records import late_record
from coordinator.ledger import Counts
from coordinator.transport import Transport
from coordinator.wait import Waiter
from coordinator.watermark import Frontier, Timing

log = logging.getLogger("bspump-cluster.coordinator")

# warn(message, *args, extra=...): a warning for the log and for the page.
Warn = Callable[..., None]


class Router:
    """Routes source batches to the workers' channels and sends the watermarks."""

    def __init__(self, intake: Intake, outputs: RunOutputs, counts: Counts,
                 frontier: Frontier, timing: Timing, waiter: Waiter, warn: Warn,
                 batch_size: int, event_time: bool) -> None:
        self.intake = intake
        self.outputs = outputs
        self.counts = counts
        self.frontier = frontier
        self.timing = timing
        self.waiter = waiter
        self.warn = warn
        self.batch_size = batch_size
        self.event_time = event_time
        self.workers = counts.workers
        self.position: Any = None  # the source position after the last batch routed

    async def route(self, transport: Transport, batch: SourceBatch) -> None:
        """Count a source batch, let the intake split it, deliver the result."""
        counts = self.counts
        for raw, reason in batch.dead:
            self.outputs.dead_letter(reason, raw)
        counts.dead += len(batch.dead)
        counts.dead_input += len(batch.dead)
        counts.records_read += len(batch) + len(batch.dead)
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
            self.note_jumps(jumps_before)
        lost = len(batch) - result.accepted - len(result.dead) - len(result.late) - result.held
        if lost:
            # Never expected: a route that drops records without a word. Say so now; the
            # ledger (read - dead - late - routed - held) then fails the run at its end.
            position = json.dumps(batch.position)
            log.error("%d records of a source batch were neither routed, late, held nor dead "
                      "letters (position %s)", lost, position,
                      extra={"event": "records_lost", "records": lost, "position": position})
        await self.deliver(transport, result)
        self.position = batch.position

    async def deliver(self, transport: Transport, result: IntakeResult) -> None:
        """Write what the intake refused, send the rest to the workers in order."""
        counts = self.counts
        for r in result.dead:
            self.outputs.dead_letter(r.reason, r.record)
        counts.dead += len(result.dead)
        counts.dead_input += len(result.dead)
        for r in result.late:
            record = late_record(r.record) if isinstance(r.record, bytes) else r.record
            self.outputs.late(record, r.event_time, self.intake.watermark)
        counts.late += len(result.late)
        lag = self.timing.max_lag
        for chunk in result.chunks:
            # Not stoppable: a stop lands between source batches, where the position is exact.
            await self.waiter.until(lambda: self.frontier.may_send(lag), stoppable=False)
            for w in range(self.workers):
                if chunk.events[w]:
                    await self.send_data(transport, w, chunk.times[w], chunk.events[w])
            if chunk.watermark is not None:
                await self.send_watermark(transport, chunk.watermark)

    async def send_data(self, transport: Transport, worker: int, times: Any,
                        events: Any) -> None:
        """Send one worker its events: columns whole, records in ``batch_size`` messages."""
        if isinstance(events, EventBatch):
            await transport.send(worker, wire.DataCols(*events.to_wire()))
            self.counts.sent[worker] += len(events)
            return
        size = self.batch_size
        kind = wire.DataRaw if isinstance(events[0], bytes) else wire.Data
        for i in range(0, len(events), size):
            await transport.send(worker, kind(times[i:i + size], events[i:i + size]))
        self.counts.sent[worker] += len(events)

    async def send_watermark(self, transport: Transport, watermark: float) -> None:
        """Send every worker the watermark, after the data sent before it."""
        seq = self.frontier.next_seq()
        for w in range(self.workers):
            await transport.send(w, wire.Watermark(seq, watermark))
        self.frontier.sent = watermark

    def note_jumps(self, before: dict[str, int]) -> None:
        """Log what the far-ahead rule (cluster.jumps) did with the last batch."""
        after = self.intake.jumps.counts()
        guard = self.intake.jumps
        if after["held"] and not before["held"]:
            self.warn("a record's event time is more than max_time_jump = %g s ahead of the "
                      "stream: held until %d records confirm or refute the jump",
                      guard.max_jump, guard.confirm,
                      extra={"event": "time_jump_held", "max_time_jump_s": guard.max_jump,
                             "confirm": guard.confirm})
        if after["refused"] > before["refused"]:
            refused = after["refused"] - before["refused"]
            self.warn("%d records refused as timestamp too far ahead (the stream did not "
                      "confirm the jump) -> %s", refused, self.outputs.dead_letters.path,
                      extra={"event": "time_jump_refused", "records": refused,
                             "path": str(self.outputs.dead_letters.path)})
        if after["released"] > before["released"]:
            released = after["released"] - before["released"]
            log.info("the stream jumped ahead: %d held records released", released,
                     extra={"event": "time_jump_released", "records": released})
