"""TimeWindowAnalyzer run by hand: counts, closed periods, ticks, count_batch, the end;
the spec's HourlyCountAnalyzer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import bspump
import bspump.analyzer
import bspump.anomaly
import bspump.kafka
import bspump.matrix
from tests.test_bspump.api_helpers import (
    T0,
    pipeline_of,
    spec_examples,
)


class KeyCounter(bspump.analyzer.TimeWindowAnalyzer):
    def __init__(self, app: Any, pipeline: Any, id: str | None = None,
                 config: Any = None) -> None:
        super().__init__(app, pipeline, id, config, window_size=600, resolution=60)
        self.ticks: list[float] = []

    def evaluate(self, context: dict[str, Any], event: Any) -> Any:
        self.count(event["k"], event.get("v", 1))
        return None

    def on_tick(self, tick: float) -> None:
        self.ticks.append(tick)


def test_time_window_counts_closes_periods_and_ticks() -> None:
    p = pipeline_of(lambda app, pl: [KeyCounter(app, pl)])
    tw = p.Processors[0]
    assert isinstance(tw, KeyCounter)
    p.advance(T0)
    data = [(5, "a", 1), (30, "b", 2), (59.999, "a", 1), (60, "a", 4), (125, "b", 1),
            (130, "a", 1)]
    p.process_batch([T0 + t for t, _, _ in data], [{"k": k, "v": v} for _, k, v in data])
    p0 = int(T0 // 60)
    expected: dict[tuple[int, str], float] = {}
    for t, k, v in data:
        key = (math.floor((T0 + t) / 60), k)
        expected[key] = expected.get(key, 0) + v
    slots = 10  # window_size / resolution

    p.advance(T0 + 120)
    assert tw.ticks == [T0 + 60, T0 + 120]
    report = p.take_report()["KeyCounter"]
    assert report["keys"] == ["a", "b"]
    assert sorted(map(tuple, report["closed"])) == [(p0, p0 % slots), (p0 + 1, (p0 + 1) % slots)]
    ring = tw.window_array
    assert ring is not None
    for period, slot in report["closed"]:
        for row, key in enumerate(report["keys"]):
            assert ring[slot, row] == expected.get((period, key), 0), (period, key)

    p.advance(T0 + 130)  # inside the same period: nothing closes, no tick
    assert tw.ticks == [T0 + 60, T0 + 120]
    assert p.take_report() == {}

    p.advance(T0 + 300)  # every period end passed fires once, data or not
    assert tw.ticks == [T0 + 60, T0 + 120, T0 + 180, T0 + 240, T0 + 300]
    report = p.take_report()["KeyCounter"]
    assert report["keys"] == []
    assert [tuple(x) for x in report["closed"]] == [(p0 + 2, (p0 + 2) % slots)]
    assert ring[(p0 + 2) % slots, 0] == expected[(p0 + 2, "a")]
    assert ring[(p0 + 2) % slots, 1] == expected[(p0 + 2, "b")]

    p.finish(T0 + 130)
    assert tw.ticks == [T0 + 60, T0 + 120, T0 + 180, T0 + 240, T0 + 300]


def test_count_batch_puts_each_event_in_the_period_its_time_floors_to() -> None:
    # The batch path (count_batch) must cut periods exactly as count() does: an event at
    # 59.999 s belongs to the period starting at 0, one at 60 s to the next.
    p = pipeline_of(lambda app, pl: [KeyCounter(app, pl)])
    tw = p.Processors[0]
    assert isinstance(tw, KeyCounter)
    p.advance(T0)
    data = [(0.2, "a", 1.0), (29.6, "b", 2.0), (59.999, "a", 3.0), (60.0, "a", 4.0),
            (89.7, "b", 5.0), (119.5, "a", 6.0)]
    tw.count_batch(np.array([k for _, k, _ in data], dtype=object),
                   np.array([T0 + t for t, _, _ in data]),
                   values=np.array([v for _, _, v in data]))
    expected: dict[tuple[int, str], float] = {}
    for t, k, v in data:
        key = (math.floor((T0 + t) / 60), k)
        expected[key] = expected.get(key, 0) + v
    p.advance(T0 + 120)
    report = p.take_report()["KeyCounter"]
    ring = tw.window_array
    assert ring is not None
    p0 = int(T0 // 60)
    assert sorted(period for period, _ in report["closed"]) == [p0, p0 + 1]
    for period, slot in report["closed"]:
        for row, key in enumerate(report["keys"]):
            assert ring[slot, row] == expected.get((period, key), 0), (period, key)


def test_finish_closes_the_last_period_and_ticks_for_it() -> None:
    p = pipeline_of(lambda app, pl: [KeyCounter(app, pl)])
    tw = p.Processors[0]
    assert isinstance(tw, KeyCounter)
    p.advance(T0 + 10)
    p.process_batch([T0 + 10, T0 + 70], [{"k": "x"}, {"k": "x"}])
    p.finish(T0 + 70)
    assert tw.ticks == [T0 + 60, T0 + 120]
    closed = p.take_report()["KeyCounter"]["closed"]
    assert sorted(period for period, _ in closed) == [int(T0 // 60), int(T0 // 60) + 1]


def test_spec_hourly_count_analyzer_prints_each_tick(
        capsys: pytest.CaptureFixture[str]) -> None:
    p = pipeline_of(lambda app, pl: [spec_examples.HourlyCountAnalyzer(app, pl)])
    p.advance(T0)
    p.process_batch([T0 + 1, T0 + 2, T0 + 3],
                    [{"type": "click"}, {"type": "view"}, {"type": "click"}])
    p.advance(T0 + 60)
    assert capsys.readouterr().out == "click: 2 events\nview: 1 events\n"
    p.process_batch([T0 + 61], [{"type": "buy"}])
    p.advance(T0 + 120)
    assert capsys.readouterr().out == "buy: 1 events\n"


