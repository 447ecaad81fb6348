"""Far-ahead event times: held until the stream confirms them, else dead letters.

The watermark follows the newest event time, so one record with a clock a day fast
would make every later record late. The rule, applied to records in input order:

- a record whose event time is more than ``max_time_jump`` seconds ahead of the
  newest event time accepted so far (the *front*) is **held**: it neither enters
  the pipeline nor moves the watermark;
- when ``time_jump_confirm`` records have been held, the stream really jumped (a
  gap in the data, a replay that skips ahead): the held records are **released** in
  their input order, as if they had just arrived, and the front moves with them;
- when ``time_jump_confirm`` records in time have arrived since the first record was
  held, the jump was one bad clock: the held records are **refused** as dead letters
  ("timestamp too far ahead");
- at the end of the input, records still held are released: nothing contradicted them.

Held records live in the coordinator and in its checkpoints, so a restore holds them
again. The counts (held now, released, refused) are in the summary and the snapshot.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack
import numpy as np


@dataclass
class Held:
    """One held record: its event time, its worker, what goes on the wire, the record."""

    time: float
    worker: int
    payload: Any
    record: Any


@dataclass
class JumpGuard:
    """The hold list and its counts (see the module docstring for the rule)."""

    max_jump: float
    confirm: int
    held: list[Held] = field(default_factory=list)
    since: int = 0  # records in time since the first record was held
    released: int = 0
    refused: int = 0

    @property
    def active(self) -> bool:
        """Whether the rule is on (``max_time_jump`` > 0)."""
        return self.max_jump > 0

    def is_ahead(self, t: float, front: float) -> bool:
        """Whether a record at ``t`` jumps too far ahead of ``front``."""
        return math.isfinite(front) and t > front + self.max_jump

    def any_ahead(self, times: np.ndarray, front: float) -> bool:
        """Whether any row of a batch, in order, jumps too far ahead (vectorized)."""
        if math.isfinite(front) and float(times.max()) <= front + self.max_jump:
            return False  # the usual batch: nothing can be ahead of a front it never passes
        prev = np.concatenate(([front], np.maximum.accumulate(times)[:-1]))
        prev = np.maximum(prev, front)
        return bool(((times > prev + self.max_jump) & np.isfinite(prev)).any())

    def refusal(self, held: Held, front: float) -> str:
        """The dead-letter reason of a held record the stream did not confirm."""
        when = datetime.fromtimestamp(held.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ahead = held.time - front if math.isfinite(front) else math.nan
        return (f"timestamp too far ahead: event time {when} is {ahead:,.0f} s ahead of the "
                f"stream (max_time_jump = {self.max_jump:g} s) and the next {self.confirm} "
                "records did not confirm the jump")

    def take(self) -> list[Held]:
        """Empty the hold list (released or refused)."""
        held, self.held = self.held, []
        self.since = 0
        return held

    def counts(self) -> dict[str, int]:
        """Held now, released and refused so far."""
        return {"held": len(self.held), "released": self.released, "refused": self.refused}

    def state(self) -> dict[str, Any]:
        """JSON-ready, for a checkpoint manifest (held records as base64 msgpack)."""
        packed = msgpack.packb([[h.time, h.worker, h.payload, h.record] for h in self.held],
                               use_bin_type=True, default=str)
        return {"held": base64.b64encode(packed).decode("ascii"), "since": self.since,
                "released": self.released, "refused": self.refused}

    def set_state(self, state: dict[str, Any] | None) -> None:
        """Continue from :meth:`state` (a manifest without one holds nothing)."""
        if not state:
            return
        rows = msgpack.unpackb(base64.b64decode(state["held"]), raw=False,
                               strict_map_key=False)
        self.held = [Held(float(t), int(w), payload, record) for t, w, payload, record in rows]
        self.since = int(state["since"])
        self.released = int(state["released"])
        self.refused = int(state["refused"])
