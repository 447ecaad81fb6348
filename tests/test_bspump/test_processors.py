"""Processors and analyzers run by hand: None drops or passes on, exceptions are dead letters."""

from __future__ import annotations

from typing import Any

import bspump
import bspump.analyzer
import bspump.anomaly
import bspump.kafka
import bspump.matrix
from tests.test_bspump.api_helpers import (
    T0,
    pipeline_of,
)


class DropOdd(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return None if event["n"] % 2 else event


class Watch(bspump.Analyzer):
    def __init__(self, app: Any, pipeline: Any, id: str | None = None) -> None:
        super().__init__(app, pipeline, id)
        self.seen: list[int] = []

    def evaluate(self, context: dict[str, Any], event: Any) -> Any:
        self.seen.append(event["n"])
        return None


class Replace(bspump.Analyzer):
    def evaluate(self, context: dict[str, Any], event: Any) -> Any:
        return {**event, "replaced": True} if event["n"] == 4 else None


def test_processor_none_drops_and_analyzer_none_passes_on() -> None:
    p = pipeline_of(lambda app, pl: [Watch(app, pl, "before"), DropOdd(app, pl),
                                     Watch(app, pl, "after"), Replace(app, pl)])
    events = [{"n": i} for i in range(7)]
    p.process_batch([T0 + i for i in range(7)], events)
    before, after = p.Processors[0], p.Processors[2]
    assert isinstance(before, Watch) and isinstance(after, Watch)
    assert before.seen == [0, 1, 2, 3, 4, 5, 6]
    assert after.seen == [0, 2, 4, 6]
    assert p.sink.events == [{"n": 0}, {"n": 2}, {"n": 4, "replaced": True}, {"n": 6}]
    assert (p.events_in, p.events_out) == (7, 4)


class Boom(bspump.Analyzer):
    def evaluate(self, context: dict[str, Any], event: Any) -> Any:
        if event.get("boom"):
            raise ValueError("cannot handle " + str(event["n"]))
        return None


def test_an_exception_sends_the_event_to_dead_letters_and_goes_on() -> None:
    p = pipeline_of(lambda app, pl: [Boom(app, pl, "boomer"), Watch(app, pl, "after")])
    p.process_batch([T0, T0 + 1, T0 + 2], [{"n": 1}, {"n": 2, "boom": True}, {"n": 3}])
    after = p.Processors[1]
    assert isinstance(after, Watch)
    assert after.seen == [1, 3]
    assert [e["n"] for e in p.sink.events] == [1, 3]
    assert len(p.dead_letters) == 1
    dead = p.dead_letters[0]
    assert dead["processor"] == "boomer"
    assert dead["record"] == {"n": 2, "boom": True}
    assert dead["event_time"] == T0 + 1
    assert "ValueError: cannot handle 2" in dead["reason"]
    assert p.take_dead_letters() == [dead] and p.dead_letters == []




def test_a_pipeline_of_a_sink_alone_passes_every_event_to_it() -> None:
    p = pipeline_of(lambda app, pl: [], start=False)  # run by hand, without start()
    events = [{"n": i} for i in range(3)]
    p.process_batch([T0 + i for i in range(3)], events)
    assert p.sink.events == events
    assert (p.events_in, p.events_out) == (3, 3)
