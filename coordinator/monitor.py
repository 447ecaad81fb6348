"""The coordinator's once-a-second look at the run.

Each second :class:`Monitor` samples the counts for the rates and the page, warns of
a rising share of dead letters or late events, kills a worker silent for longer than
``worker_timeout``, redraws the progress line, asks the source's brokers whether they
answer and, every five seconds, how far behind the end the source is (Kafka lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from cluster.config import ClusterSettings
from cluster.outputs import RunOutputs
from coordinator.ledger import Counts
from coordinator.liveness import Liveness
from coordinator.status import Status

log = logging.getLogger("bspump-cluster.coordinator")

PROBE_EVERY = 2  # seconds between asking the source's brokers whether they answer


class Monitor:
    """The once-a-second loop: history, warnings, silent workers, progress, the source."""

    def __init__(self, settings: ClusterSettings, source: Any, outputs: RunOutputs,
                 counts: Counts, liveness: Liveness, status: Status) -> None:
        self.settings = settings
        self.source = source
        self.outputs = outputs
        self.counts = counts
        self.liveness = liveness
        self.status = status
        self.source_down: float | None = None  # since when the source's brokers are silent

    async def run(self) -> None:
        """Every second: throughput history, the progress line; Kafka lag every 5 s."""
        lag_of = getattr(self.source, "lag", None)
        probe = getattr(self.source, "probe", None)
        counts, status = self.counts, self.status
        warn = status.warnings.warn
        tick = 0
        dead_seen = counts.dead
        late_window: deque[tuple[int, int]] = deque(maxlen=11)
        late_quiet_until = 0
        share = self.settings.routing.late_warning_share
        while True:
            status.sample()
            if tick % 10 == 9 and counts.dead > dead_seen:
                new, path = counts.dead - dead_seen, self.outputs.dead_letters.path
                log.warning("dead letters: %d in the last 10 s (%d in all) -> %s",
                            new, counts.dead, path,
                            extra={"event": "dead_letter_rate", "dead_letters_10s": new,
                                   "dead_letters_total": counts.dead, "path": str(path)})
                dead_seen = counts.dead
            # Late share over the last 10 s, checked every second, said at most every 10 s.
            late_window.append((counts.late, counts.records_read))
            late = counts.late - late_window[0][0]
            read = counts.records_read - late_window[0][1]
            if late and late > share * read and tick >= late_quiet_until:
                lateness = self.settings.routing.allowed_lateness
                warn("late events: %d of the %d records read in the last %d s (%.0f%%, "
                     "more than late_warning_share = %g) were behind the watermark; "
                     "allowed_lateness = %g s -> %s", late, read, len(late_window) - 1,
                     100 * late / read, share, lateness, self.outputs.late_events.path,
                     extra={"event": "late_share", "late_events": late, "records_read": read,
                            "span_s": len(late_window) - 1, "late_warning_share": share,
                            "allowed_lateness_s": lateness,
                            "path": str(self.outputs.late_events.path)})
                late_quiet_until = tick + 10
            if status.state == "running":
                self.liveness.check(warn)
            if status.show_progress:
                status.print_progress()
            if probe is not None and tick % PROBE_EVERY == 0:
                await self.probe_source(probe)
            if lag_of is not None and tick % 5 == 0 and self.source_down is None:
                with contextlib.suppress(Exception):
                    status.kafka_lag = await lag_of()
            tick += 1
            await asyncio.sleep(1.0)

    async def probe_source(self, probe: Any) -> None:
        """Say once when the source's brokers stop answering, and when they answer again."""
        problem = await probe()
        config = getattr(self.source, "connection_config", {})
        servers = config.get("bootstrap_servers", "the source")
        if problem is not None and self.source_down is None:
            self.source_down = time.monotonic()
            log.warning("Kafka at %s does not answer (%s); retrying in %.1f s", servers,
                        problem, PROBE_EVERY,
                        extra={"event": "kafka_unreachable", "servers": servers,
                               "error": problem, "retry_s": PROBE_EVERY})
        elif problem is None and self.source_down is not None:
            down = time.monotonic() - self.source_down
            log.info("Kafka at %s answers again after %.1f s", servers, down,
                     extra={"event": "kafka_back", "servers": servers, "down_s": down})
            self.source_down = None
