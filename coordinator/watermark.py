"""Event time on the coordinator: the tick, the watermark frontier, when the next tick is.

:func:`timing_of` derives a run's tick (how often a watermark goes out), ``max_lag``
(how far the newest watermark sent may run ahead of the newest one every worker has
acked) and the ring span a worker's window ring must cover. :class:`Frontier` keeps
the watermarks themselves: sent, acked by each worker, merged.
"""

from __future__ import annotations

import dataclasses
import math
import time
from datetime import UTC, datetime
from typing import Any

from bspump.analyzer import SessionAnalyzer, TimeWindowAnalyzer
from bspump.periods import next_boundary
from cluster.config import ClusterSettings


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


def next_tick_in(timing: Timing, event_time: bool, now: float | None = None) -> float | None:
    """Seconds until the next wall-clock tick boundary; None when time comes from the events.

    With processing time the run loop wakes up at each boundary to send a watermark
    even when no record arrives; with event time only records move the watermark.
    """
    if event_time:
        return None
    tick = timing.tick
    now = time.time() if now is None else now
    return max(0.0, next_boundary(now, tick) - now)


def fmt_time(t: float) -> str:
    """An epoch time as ``2026-01-01T00:00:00Z``; ``-`` before the first event."""
    if not math.isfinite(t):
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Frontier:
    """The watermarks of a run: the newest sent, each worker's newest acked, the merged.

    Windows up to the smallest acked watermark are closed on every worker and can be
    merged. Data goes out only while the newest watermark sent is at most ``max_lag``
    ahead of the merged one, so a worker never reuses a window slot the coordinator has
    not read yet.
    """

    def __init__(self, workers: int) -> None:
        self.acked = [-math.inf] * workers
        self.sent = -math.inf
        self.merged = -math.inf
        self.seq = 0  # of the newest watermark (or end) message sent

    def restore(self, watermark: float) -> None:
        """Start from a checkpoint's watermark: every worker is there, all of it merged."""
        self.acked = [watermark] * len(self.acked)
        self.merged = self.sent = watermark

    def next_seq(self) -> int:
        """The sequence number of the next watermark or end message."""
        self.seq += 1
        return self.seq

    def ack(self, worker: int, watermark: float) -> float:
        """Note a worker's ack; return the watermark every worker has reached."""
        self.acked[worker] = watermark
        return min(self.acked)

    def may_send(self, max_lag: float) -> bool:
        """Whether data may go out: the sent watermark is at most ``max_lag`` ahead."""
        return not self.sent - self.merged > max_lag
