"""The in-memory source and sink of :mod:`bspump.testing`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from bspump import Application, Pipeline, Sink, Source, SourceBatch


class TestingSource(Source):
    """Yields the events it was given, in order, ``batch`` events per source batch.

    ``TestingSource(app, pipeline, events=[{...}, ...])``. Events are handed over as
    given (not copied): a processor that changes an event changes the caller's dict.
    """

    __test__ = False  # a class named Test* that pytest must not collect

    def __init__(self, app: Application, pipeline: Pipeline, events: Iterable[Any] = (),
                 id: str | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        self.events = list(events)
        self._next = 0

    def seek(self, position: Any) -> None:
        """Resume after event number ``position``."""
        self._next = int(position)

    async def batches(self) -> AsyncIterator[SourceBatch]:
        """The events, in batches; a batch's position is how many events are done."""
        size = max(1, int(self.Config["batch"]))
        while self._next < len(self.events):
            start = self._next
            self._next = min(start + size, len(self.events))
            yield SourceBatch(self.events[start:self._next], position=self._next)


class TestingSink(Sink):
    """Keeps every event that reaches it in :attr:`events`, in arrival order."""

    __test__ = False

    def __init__(self, app: Application, pipeline: Pipeline, id: str | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        self.events: list[Any] = []

    def write(self, context: dict[str, Any], event: Any) -> None:
        """Keep the event."""
        self.events.append(event)

    def _batch_step(self) -> Any:
        # Keep the batch path open to pipelines whose analyzers take whole batches.
        def keep(batch: Any) -> None:  # a bspump.batch.EventBatch
            self.events.extend(batch.to_dicts())

        return keep
