"""``coordinator.watermark``: the tick, max_lag, the ring span, the frontier, the next tick."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from bspump.analyzer import TimeWindowAnalyzer
from coordinator.runtime import Coordinator
from coordinator.watermark import Frontier, Timing, fmt_time, next_tick_in, timing_of
from tests.conftest import T0

LINE = json.dumps({"user_id": "u1", "timestamp": T0})


def test_the_tick_is_the_finest_window_resolution(
        make_coordinator: Callable[..., Coordinator]) -> None:
    # The seed pipeline: HourlyCountAnalyzer (resolution 60 s) and a 30 min session
    # timeout (a quarter of it, 450 s, is coarser); allowed_lateness = 30.
    timing = make_coordinator([LINE]).timing
    assert timing == Timing(tick=60.0, max_lag=8 * 60.0, ring_span=30 + 8 * 60 + 2 * 60)
    assert make_coordinator([LINE], cluster="max_lag = 90").timing == Timing(60.0, 90.0, 240.0)


def test_without_windows_the_tick_is_a_quarter_of_the_shortest_session_timeout(
        make_coordinator: Callable[..., Coordinator]) -> None:
    coord = make_coordinator([LINE])

    class Sessions:  # the seed pipeline's processors without its TimeWindowAnalyzers
        Processors = [p for p in coord.pipeline.Processors
                      if not isinstance(p, TimeWindowAnalyzer)]
    assert timing_of(Sessions, coord.settings).tick == 1800 / 4


def test_the_next_tick_is_the_next_wall_clock_boundary() -> None:
    timing = Timing(tick=60.0, max_lag=480.0, ring_span=630.0)
    assert next_tick_in(timing, event_time=False, now=120.5) == 59.5
    assert next_tick_in(timing, event_time=False, now=180.0) == 60.0  # strictly after
    assert next_tick_in(timing, event_time=True, now=120.5) is None  # records move time


def test_the_frontier_merges_up_to_the_slowest_worker() -> None:
    f = Frontier(3)
    assert f.may_send(10.0)  # nothing sent yet
    assert f.ack(0, 100.0) == -math.inf  # the others have acked nothing
    assert f.ack(1, 120.0) == -math.inf
    assert f.ack(2, 90.0) == 90.0
    assert f.ack(2, 130.0) == 100.0
    f.sent, f.merged = 110.0, 100.0
    assert f.may_send(10.0) and not f.may_send(9.9)
    assert [f.next_seq(), f.next_seq()] == [1, 2]


def test_a_restored_frontier_starts_at_the_checkpoint_watermark() -> None:
    f = Frontier(2)
    f.restore(500.0)
    assert f.acked == [500.0, 500.0] and f.sent == f.merged == 500.0
    assert f.ack(0, 560.0) == 500.0


def test_times_print_as_utc_and_a_dash_before_the_first_event() -> None:
    assert fmt_time(T0) == "2026-01-01T00:00:00Z"
    assert fmt_time(-math.inf) == "-"
