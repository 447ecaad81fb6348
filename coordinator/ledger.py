"""The ledger of a run: every record read ends as processed, late or a dead letter.

The coordinator counts what it reads, what it refuses before routing (dead input),
what is late and what it routes to each worker; each worker reports how many events
its pipeline took in and how many of those a processor raised on. Then

    read = processed + late + dead

where ``dead`` is the dead input plus the events a processor raised on, and
``processed`` the events the pipeline took in without an error (a processor may still
have dropped them on purpose). While the run goes on, events routed and not yet
reported by a worker are *in flight*; at the end nothing may be in flight and nothing
unaccounted for, or the run fails with :data:`cluster.exits.LEDGER`.

Dead-letter lines that are not input records (an ``on_tick`` or ``on_session_end``
that raised, a session that cannot be checkpointed) are in ``dead-letters.jsonl`` but
not in the ledger: no record was lost there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Ledger:
    """The run's record counts at one moment."""

    read: int
    processed: int
    late: int
    dead: int
    in_flight: int
    unaccounted: int
    held: int = 0

    @classmethod
    def of(cls, *, read: int, dead_input: int, late: int, routed: int, handled: int,
           failed: int, held: int = 0) -> Ledger:
        """The ledger from the raw counts (``handled``: events workers took in)."""
        return cls(read=read, processed=handled - failed, late=late, dead=dead_input + failed,
                   in_flight=routed - handled, held=held,
                   unaccounted=read - dead_input - late - routed - held)

    @property
    def closes(self) -> bool:
        """Every record read is processed, late or dead, and none is still on its way."""
        return self.in_flight == 0 and self.unaccounted == 0 and self.held == 0

    def equation(self) -> str:
        """``read 20,000 = processed 19,500 + late 40 + dead 460``, plus what is open."""
        text = (f"read {self.read:,} = processed {self.processed:,} + late {self.late:,} "
                f"+ dead {self.dead:,}")
        if self.in_flight:
            text += f" + in flight {self.in_flight:,}"
        if self.held:
            text += f" + held {self.held:,}"
        if self.unaccounted:
            text += f" + UNACCOUNTED {self.unaccounted:,}"
        return text

    def problem(self) -> str | None:
        """Why the ledger does not close at the end of a run, or None."""
        if self.closes:
            return None
        parts = []
        if self.in_flight > 0:
            parts.append(f"{self.in_flight:,} events were sent to workers and never reported "
                         "back as processed")
        elif self.in_flight < 0:
            parts.append(f"workers reported {-self.in_flight:,} more events than were sent")
        if self.unaccounted:
            parts.append(f"{self.unaccounted:,} records read were neither routed, late nor "
                         "dead letters")
        if self.held:
            parts.append(f"{self.held:,} records are still held")
        return f"the ledger does not close ({self.equation()}): " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``closes``."""
        return {**asdict(self), "closes": self.closes}


@dataclass
class Counts:
    """The coordinator's running counts, from which the ledger and the summary are built.

    ``sent`` is counted here as events are routed; ``processed``, ``failed``, ``batched``
    and ``open_sessions`` are the newest figures each worker reported. The ``restored_*``
    counts are those of the checkpoint the run resumed from (workers count from zero).
    """

    workers: int
    records_read: int = 0
    dead: int = 0  # lines in dead-letters.jsonl
    dead_input: int = 0  # records refused before routing (source, intake)
    late: int = 0
    sessions_ended: int = 0
    window_rows: int = 0
    restored_events: int = 0
    restored_routed: int = 0
    restored_failed: int = 0
    sent: list[int] = field(default_factory=list)
    processed: list[int] = field(default_factory=list)  # events each worker's pipeline took in
    failed: list[int] = field(default_factory=list)  # of those, events a processor raised on
    batched: list[int] = field(default_factory=list)
    open_sessions: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("sent", "processed", "failed", "batched", "open_sessions"):
            if not getattr(self, name):
                setattr(self, name, [0] * self.workers)

    def routed(self) -> int:
        """Events routed to a worker, in this run and before the checkpoint it resumed."""
        return self.restored_routed + sum(self.sent)

    def handled(self) -> int:
        """Events the workers' pipelines took in, before the checkpoint too."""
        return self.restored_events + sum(self.processed)

    def failed_total(self) -> int:
        """Events a processor raised on, before the checkpoint too."""
        return self.restored_failed + sum(self.failed)

    def ledger(self, held: int = 0) -> Ledger:
        """Where every record read went so far (``held``: records the intake holds)."""
        return Ledger.of(read=self.records_read, dead_input=self.dead_input, late=self.late,
                         routed=self.routed(), handled=self.handled(),
                         failed=self.failed_total(), held=held)
