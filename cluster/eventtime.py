"""Event time at intake: lateness, the watermark, tick cuts and far-ahead records.

The rules are sequential, applied to rows in input order (and vectorized here):

- a row is late when its event time is below the watermark *before* it;
- the watermark is the newest event time so far minus ``allowed_lateness``;
- a chunk (and its watermark message) ends where the watermark crosses a tick
  boundary, the row that crossed it going into the next chunk;
- a row too far ahead of the newest time is held, then released or refused as
  :mod:`cluster.jumps` says.

Without an event-time field, records are stamped in processing time and
:meth:`EventClock.clock` moves the watermark with the wall clock, once a tick.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from bspump.periods import next_boundary, period_end
from cluster.chunks import IntakeResult, Rejected, Take, cut
from cluster.jumps import Held, JumpGuard


class EventClock:
    """The watermark of one intake and the rules that move it (see module docstring)."""

    def __init__(self, workers: int, tick: float, lateness: float, event_time: bool,
                 max_time_jump: float, time_jump_confirm: int) -> None:
        if not tick > 0:
            raise ValueError("tick must be positive")
        self.workers = workers
        self.tick = tick
        self.lateness = lateness
        self.event_time = event_time
        self.watermark = -math.inf
        self.max_time = -math.inf
        self._next_boundary = -math.inf
        self.jumps = JumpGuard(max_time_jump if event_time else 0.0, time_jump_confirm)

    def split(self, times: np.ndarray, workers: np.ndarray, take: Take,
              result: IntakeResult, row: Callable[[int], Any] | None = None) -> None:
        """Lateness, watermark and per-worker chunks of one batch's rows, for every path.

        ``take(rows, times)`` builds one worker's payload; ``row(i)`` the record of row
        ``i`` for the late events (raw payloads come back through take)."""
        n = len(times)
        if n == 0:
            return
        if not self.event_time:
            cut(self.workers, times, workers, take, np.arange(n), [], [], result, row is None)
            return
        guard = self.jumps
        if guard.active and (guard.held or guard.any_ahead(times, self.max_time)):
            self._split_guarded(times, workers, take, result, row)
            return
        self._in_time(times, workers, take, result, row, row is None)

    def _in_time(self, times: np.ndarray, workers: np.ndarray, take: Take,
                 result: IntakeResult, row: Callable[[int], Any] | None,
                 as_lists: bool) -> None:
        """The rules of :meth:`split` for rows no record is held among."""
        # The sequential rules, vectorized: a row is late against the watermark before it.
        cm = np.maximum(np.maximum.accumulate(times), self.max_time)
        w_after = np.maximum(cm - self.lateness, self.watermark)
        w_before = np.concatenate(([self.watermark], w_after[:-1]))
        late = times < w_before
        if late.any():
            for j in np.flatnonzero(late).tolist():
                record = row(j) if row is not None else take(np.array([j]), times[j:j + 1])[0]
                result.late.append(Rejected(record, "late", float(times[j])))
        keep = np.flatnonzero(~late)
        w_keep = w_after[keep]
        self.max_time = float(cm[-1])
        self.watermark = float(w_after[-1])
        # The cuts: rows where the watermark's tick number goes up.
        tick_of = np.floor(w_keep / self.tick)
        first = round(self._next_boundary / self.tick) - 1 \
            if math.isfinite(self._next_boundary) else -math.inf
        previous = np.concatenate(([first], tick_of[:-1]))
        cuts = np.flatnonzero(tick_of > previous).tolist()
        if cuts:
            self._next_boundary = period_end(float(tick_of[cuts[-1]]), self.tick)
        cut(self.workers, times, workers, take, keep, cuts, [float(w_keep[c]) for c in cuts],
            result, as_lists)

    def _split_guarded(self, times: np.ndarray, workers: np.ndarray, take: Take,
                       result: IntakeResult, row: Callable[[int], Any] | None) -> None:
        """A batch with a record far ahead, or while some are held: row by row (rare).

        Runs of rows in time go through :meth:`_in_time` as usual; a row too far ahead
        is held; the hold list is released or refused as :mod:`cluster.jumps` says.
        """
        guard = self.jumps
        front = self.max_time
        normal: list[int] = []

        def flush() -> None:
            if normal:
                idx = np.array(normal, dtype=np.int64)
                self._in_time(times[idx], workers[idx], lambda sel, t: take(idx[sel], t),
                              result, None if row is None else (lambda j: row(int(idx[j]))),
                              row is None)
                normal.clear()

        for j, t in enumerate(times.tolist()):
            if guard.is_ahead(t, front):
                part = take(np.array([j]), times[j:j + 1])
                payload = part[0] if isinstance(part, list) else part.row(0)
                guard.held.append(Held(t, int(workers[j]), payload,
                                       row(j) if row is not None else payload))
                result.held += 1
                if len(guard.held) >= guard.confirm:
                    flush()
                    self._release(result)
                    front = self.max_time
                continue
            normal.append(j)
            front = max(front, t)
            if guard.held:
                guard.since += 1
                if guard.since >= guard.confirm:
                    flush()
                    for h in guard.take():
                        result.dead.append(Rejected(h.record, guard.refusal(h, front), h.time))
                        result.held -= 1
                        guard.refused += 1
        flush()

    def _release(self, result: IntakeResult) -> None:
        """Let every held record in, in input order, as if it had just arrived."""
        held = self.jumps.take()
        if not held:
            return
        self.jumps.released += len(held)
        result.held -= len(held)
        times = np.array([h.time for h in held], dtype=np.float64)
        workers = np.array([h.worker for h in held], dtype=np.int64)
        self._in_time(times, workers, lambda sel, t: [held[i].payload for i in sel.tolist()],
                      result, lambda j: held[j].record, True)

    def release_held(self) -> IntakeResult:
        """End of input: records still held go in (nothing contradicted their jump)."""
        result = IntakeResult()
        self._release(result)
        return result

    def state(self) -> dict[str, Any]:
        """Watermark bookkeeping and held records, for a checkpoint manifest."""
        return {"watermark": self.watermark, "max_time": self.max_time,
                "next_boundary": self._next_boundary, "jumps": self.jumps.state()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.watermark = float(state["watermark"])
        self.max_time = float(state["max_time"])
        self._next_boundary = float(state["next_boundary"])
        self.jumps.set_state(state.get("jumps"))

    def clock(self, now: float) -> float | None:
        """Processing time: the watermark to send at wall-clock ``now``, if a tick passed."""
        if self.event_time or now < self._next_boundary:
            return None
        self.watermark = now
        self._next_boundary = next_boundary(now, self.tick)
        return now
