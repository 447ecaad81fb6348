"""Assertions shared by the integration tests: a run's results against the reference."""

from __future__ import annotations

import numpy as np

from tests.conftest import Run
from tests.reference import Reference


def assert_results_match(run: Run, ref: Reference, pipeline: str = "SeedPipeline") -> None:
    """Windows, sessions, GeoMatrix, dead letters and late events equal the reference."""
    rows = run.jsonl(f"{pipeline}.HourlyCountAnalyzer.windows.jsonl")
    got = [(r["window_start"], r["window_end"], r["key"], r["count"]) for r in rows]
    assert len(got) == len(set(got)), "a window row was written twice"
    assert set(got) == ref.windows

    sessions = run.jsonl(f"{pipeline}.UserSessionAnalyzer.sessions.jsonl")
    got_sessions = sorted((s["key"], s["start"], s["end"], s["events"]) for s in sessions)
    assert got_sessions == sorted(ref.sessions)

    geo = np.load(run.out / "GeoMatrix.npy", allow_pickle=False)
    np.testing.assert_array_equal(geo, ref.geo)

    summary = run.summary()
    dead = run.jsonl("dead-letters.jsonl")
    assert summary["dead_letters"] == len(dead) == ref.dead_input + ref.geo_failures
    assert summary["late_events"] == len(run.jsonl("late-events.jsonl")) == ref.late
    assert summary["events_processed"] == len(ref.accepted)
    # Every record read ended as processed, late or dead, and the ledger says so.
    assert summary["ledger"] == {
        "read": ref.dead_input + ref.late + len(ref.accepted),
        "processed": len(ref.accepted) - ref.geo_failures, "late": ref.late,
        "dead": ref.dead_input + ref.geo_failures, "in_flight": 0, "unaccounted": 0,
        "held": 0, "closes": True}
