"""Pipeline: a source, processors in order, a sink; and the shard-side loop over events."""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bspump.errors import CheckpointError, ConfigError
from bspump.processor import NOTHING as _NOTHING
from bspump.processor import Processor, Sink, Source
from bspump.state import RestoreInfo, StateReader, StateWriter

if TYPE_CHECKING:
    from bspump.application import Application, RunInfo
    from bspump.batch import EventBatch


class Pipeline:
    """A chain ``source -> processors... -> sink`` built with :meth:`build`.

    In a cluster run the same class is created in every process: the coordinator
    runs only its source; each worker runs its processors and sink on its shard.
    """

    def __init__(self, app: Application, id: str | None = None) -> None:
        self.App = app
        self.Id = id or type(self).__name__
        self.Source: Source | None = None
        self.Processors: list[Processor] = []
        self.Sink: Sink | None = None
        # Event time and sequence number of the event being processed, for analyzers.
        self.event_time = 0.0
        self.event_seq = 0
        self.events_in = 0
        self.events_out = 0
        self.events_batched = 0  # of events_in, how many took the batch path
        self.events_failed = 0  # of events_in, how many a processor raised on (dead letters)
        self.dead_letters: list[dict[str, Any]] = []
        self._chain: list[Callable[[dict[str, Any], Any], Any]] = []
        self._observes: list[bool] = []
        self._sink_step: Callable[[dict[str, Any], Any], Any] | None = None
        self._batch_steps: list[Callable[[EventBatch], None]] | None = None
        app.add_pipeline(self)

    def build(self, source: Source, *processors: Processor) -> None:
        """Set the source, the processors and (last, when a :class:`Sink`) the sink."""
        if not isinstance(source, Source):
            raise ConfigError(f"pipeline {self.Id!r}: build() takes a Source first, "
                              f"got {type(source).__name__}")
        chain = list(processors)
        sink: Sink | None = None
        if chain and isinstance(chain[-1], Sink):
            last = chain.pop()
            assert isinstance(last, Sink)
            sink = last
        for p in chain:
            if not isinstance(p, Processor):
                raise ConfigError(f"pipeline {self.Id!r}: {p!r} is not a Processor")
            if isinstance(p, (Source, Sink)):
                raise ConfigError(f"pipeline {self.Id!r}: {type(p).__name__} {p.Id!r} "
                                  "must be first (source) or last (sink)")
        self.Source = source
        self.Processors = chain
        self.Sink = sink
        ids = [p.Id for p in self.pieces()]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ConfigError(f"pipeline {self.Id!r}: several processors with id "
                              f"{sorted(dup)[0]!r}; give them distinct ids")

    def pieces(self) -> list[Processor]:
        """Source, processors and sink, in order."""
        out: list[Processor] = []
        if self.Source is not None:
            out.append(self.Source)
        out.extend(self.Processors)
        if self.Sink is not None:
            out.append(self.Sink)
        return out

    def check_config(self) -> None:
        """Refuse ``[pipeline:ID:NAME]`` sections that name no piece of this pipeline."""
        cfg = self.App.Config
        prefix = f"pipeline:{self.Id}:"
        for section in cfg.sections():
            if section.startswith(prefix) and section not in self.App._used_sections:
                names = ", ".join(sorted({c.__name__ for p in self.pieces()
                                          for c in type(p).__mro__ if c is not object}
                                         | {p.Id for p in self.pieces()}))
                raise ConfigError(f"{cfg.where(section)}: no processor of pipeline {self.Id!r} "
                                  f"has this id or class (known: {names})")

    # -- the shard-side loop -------------------------------------------------------------

    def start(self, run: RunInfo) -> None:
        """Prepare every processor and the sink for a run."""
        for p in self._stateful():
            p._start(run)
        steps = [p._step() for p in self.Processors]
        self._chain = [fn for fn, _ in steps]
        self._observes = [observes for _, observes in steps]
        self._sink_step = self.Sink._step()[0] if self.Sink is not None else None
        batch_steps = [p._batch_step() for p in self._stateful()]
        self._batch_steps = None if any(b is None for b in batch_steps) else \
            [b for b in batch_steps if b is not _NOTHING]

    def process_batch(self, times: Sequence[float], events: Sequence[Any]) -> None:
        """Run every processor, then the sink, on each event in order.

        An exception raised for one event sends that event to the dead letters
        and the batch goes on.
        """
        if not self._chain and self._sink_step is None:
            # Called without start(): every piece's plain process().
            self._chain = [p.process for p in self.Processors]
            self._observes = [False] * len(self._chain)
            self._sink_step = self.Sink.process if self.Sink is not None else None
        chain = self._chain
        sink = self._sink_step
        seq = self.event_seq
        out = 0
        failed = 0
        step: Callable[[dict[str, Any], Any], Any] | None = None
        if all(self._observes):
            # Analyzers only (the common case): None means "pass the event on".
            for t, event in zip(times, events, strict=True):
                self.event_time = t
                seq += 1
                self.event_seq = seq
                context: dict[str, Any] = {"event_time": t}
                try:
                    for step in chain:
                        result = step(context, event)
                        if result is not None:
                            event = result
                    if sink is not None:
                        step = sink
                        sink(context, event)
                except Exception as e:
                    self._dead_letter(step, event, e)
                    failed += 1
                    continue
                out += 1
        else:
            steps = list(zip(chain, self._observes, strict=True))
            for t, event in zip(times, events, strict=True):
                self.event_time = t
                seq += 1
                self.event_seq = seq
                context = {"event_time": t}
                try:
                    for step, observes in steps:
                        result = step(context, event)
                        if result is None:
                            if observes:
                                continue
                            break
                        event = result
                    else:
                        if sink is not None:
                            step = sink
                            sink(context, event)
                        out += 1
                except Exception as e:
                    self._dead_letter(step, event, e)
                    failed += 1
        self.events_in += len(events)
        self.events_out += out
        self.events_failed += failed

    def process_columns(self, batch: EventBatch) -> None:
        """Run a columnar batch: whole-batch steps when every piece has one, else per event.

        A batch step that raises sends every event of the batch to the dead letters
        (its effects cannot be told apart per event); the run goes on.
        """
        steps = self._batch_steps
        if steps is None:
            self.process_batch(batch.times.tolist(), batch.to_dicts())
            return
        n = len(batch)
        if n:
            self.event_time = float(batch.times[-1])
            self.event_seq += n
        step: Callable[[EventBatch], None] | None = None
        try:
            for step in steps:
                step(batch)
        except Exception as e:
            for event in batch.to_dicts():
                self._dead_letter(step, event, e)
            self.events_in += n
            self.events_failed += n
            return
        self.events_in += n
        self.events_out += n
        self.events_batched += n

    def _dead_letter(self, step: Callable[..., Any] | None, event: Any, error: Exception) -> None:
        owner = getattr(step, "__self__", None)
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f" at {frame.filename}:{frame.lineno}" if frame else ""
        self.dead_letters.append({
            "reason": f"{type(error).__name__}: {error}{where}",
            "processor": getattr(owner, "Id", None),
            "event_time": self.event_time,
            "record": event,
        })

    def advance(self, watermark: float) -> None:
        """Event time reached ``watermark``: windows close, ticks fire, sessions time out."""
        for p in self._stateful():
            p._advance(watermark)

    def finish(self, last_time: float) -> None:
        """End of input: close every window and session, flush the sink."""
        for p in self.Processors:
            p._finish(last_time if math.isfinite(last_time) else 0.0)
        if self.Sink is not None:
            self.Sink.close()

    def _stateful(self) -> list[Processor]:
        return [*self.Processors, *([self.Sink] if self.Sink is not None else [])]

    def checkpoint(self, writer: StateWriter) -> None:
        """Write this shard's state: processors, sink, and every matrix."""
        for p in self._stateful():
            p._checkpoint(writer)
        for mid, matrix in self.App.Matrices.items():
            writer.put_array(f"m.{mid}", matrix.Array)

    def restore(self, readers: Sequence[StateReader], info: RestoreInfo) -> None:
        """Load this shard's part of a checkpoint written by ``len(readers)`` workers."""
        for mid, matrix in self.App.Matrices.items():
            matrix.Array[...] = 0  # a PersistentMatrix loaded from its path is in the checkpoint
            for old, reader in enumerate(readers):
                if not info.summable_from(old):
                    continue
                part = reader.get_array(f"m.{mid}")
                if part is None:
                    continue
                if part.shape != matrix.Array.shape:
                    raise CheckpointError(f"matrix {mid!r}: checkpoint has shape {part.shape}, "
                                          f"the pipeline now makes {matrix.Array.shape}")
                matrix.Array += part
        for p in self._stateful():
            p._restore(readers, info)

    def take_report(self) -> dict[str, Any]:
        """News for the coordinator since the last report."""
        report: dict[str, Any] = {}
        for p in self.Processors:
            r = p._report()
            if r:
                report[p.Id] = r
        return report

    def take_dead_letters(self) -> list[dict[str, Any]]:
        """Dead letters since the last call."""
        dead, self.dead_letters = self.dead_letters, []
        return dead
