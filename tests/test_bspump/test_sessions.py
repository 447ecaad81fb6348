"""SessionAnalyzer run by hand: gaps, the watermark, keys and out-of-order events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_bspump.api_helpers import (
    T0,
    ListPipeline,
    pipeline_of,
    spec_examples,
)


def user_event(user: str, t: float) -> dict[str, Any]:
    return {"user_id": user, "timestamp": t}


def sessions_pipeline() -> tuple[ListPipeline, Any]:
    p = pipeline_of(lambda app, pl: [spec_examples.UserSessionAnalyzer(app, pl)])
    p.advance(T0)  # the runtime's first watermark: the first event time
    return p, p.Processors[0]


def ended(p: ListPipeline) -> list[Any]:
    return p.take_report().get("UserSessionAnalyzer", {}).get("ended", [])


def test_a_session_ends_exactly_when_the_gap_exceeds_the_timeout(
        capsys: pytest.CaptureFixture[str]) -> None:
    p, analyzer = sessions_pipeline()
    times = [T0, T0 + 1800.0, T0 + 3600.0, T0 + 5400.001, T0 + 5500.0]
    for t in times:  # one event per batch, as a worker may receive them
        p.process_batch([t], [user_event("a", t)])
    # Gaps: 1800 (== timeout: same session), 1800, 1800.001 (> timeout: new session), 99.999.
    assert ended(p) == [["a", T0, T0 + 3600.0, 3]]
    assert capsys.readouterr().out == "Session a ended with 3 events\n"
    assert analyzer.open_sessions == 1
    p.finish(T0 + 5500.0)
    assert ended(p) == [["a", T0 + 5400.001, T0 + 5500.0, 2]]
    assert capsys.readouterr().out == "Session a ended with 2 events\n"
    assert analyzer.open_sessions == 0


def test_the_watermark_ends_idle_sessions_after_the_timeout(
        capsys: pytest.CaptureFixture[str]) -> None:
    p, analyzer = sessions_pipeline()
    p.process_batch([T0 + 10, T0 + 20, T0 + 30],
                    [user_event("a", T0 + 10), user_event("b", T0 + 20),
                     user_event("a", T0 + 30)])
    p.advance(T0 + 30 + 1800)  # a's gap == timeout; b's gap 1810 > timeout
    assert ended(p) == [["b", T0 + 20, T0 + 20, 1]]
    p.advance(T0 + 30 + 1800 + 0.5)
    assert ended(p) == [["a", T0 + 10, T0 + 30, 2]]
    assert capsys.readouterr().out == ("Session b ended with 1 events\n"
                                       "Session a ended with 2 events\n")
    assert analyzer.open_sessions == 0
    p.finish(T0 + 30)
    assert ended(p) == []


def test_sessions_are_per_key_and_out_of_order_events_join_them() -> None:
    p, analyzer = sessions_pipeline()
    p.process_batch([T0 + 100, T0 + 50, T0 + 110, T0 + 90],
                    [user_event("a", T0 + 100), user_event("b", T0 + 50),
                     user_event("a", T0 + 110), user_event("a", T0 + 90)])
    assert analyzer.open_sessions == 2
    p.finish(T0 + 110)
    assert sorted(ended(p)) == [["a", T0 + 90, T0 + 110, 3], ["b", T0 + 50, T0 + 50, 1]]


