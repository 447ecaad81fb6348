"""The same input gives the same windows, sessions and matrices on any topology.

Every run is compared with tests/reference.py, an independent single-process
computation, never with another run of the system.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_lines, run_config, shm_segments
from tests.reference import compute

TOPOLOGIES = [("in-process", None), ("1 worker", 1), ("2 workers", 2), ("4 workers", 4)]


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return make_lines()


@pytest.fixture(scope="module")
def reference(lines: list[str]):
    return compute(lines, lateness=30, resolution=60, session_timeout=1800)


@pytest.mark.parametrize(("name", "workers"), TOPOLOGIES, ids=[t[0] for t in TOPOLOGIES])
def test_results_equal_reference(name, workers, lines, reference, seed_config,
                                 tmp_path: Path) -> None:
    before = shm_segments()
    config = seed_config(lines)
    run = run_config(config, tmp_path / "out", workers=workers,
                     in_process=workers is None)
    assert run.returncode == 0, run.stderr

    # Windows: one row per (period, type), merged over all shards.
    rows = run.jsonl("SeedPipeline.HourlyCountAnalyzer.windows.jsonl")
    got = [(r["window_start"], r["window_end"], r["key"], r["count"]) for r in rows]
    assert len(got) == len(set(got)), "a window row was written twice"
    assert set(got) == reference.windows

    # Sessions: user, first and last event time, event count.
    sessions = run.jsonl("SeedPipeline.UserSessionAnalyzer.sessions.jsonl")
    got_sessions = sorted((s["key"], s["start"], s["end"], s["events"]) for s in sessions)
    assert got_sessions == sorted(reference.sessions)
    assert len({s[0] for s in got_sessions}) < len(got_sessions), "no user had two sessions"

    # The spec's GeoMatrix, summed over shards.
    geo = np.load(run.out / "GeoMatrix.npy", allow_pickle=False)
    np.testing.assert_array_equal(geo, reference.geo)

    # What the spec's analyzers print reaches stdout as whole lines.
    printed = Counter(re.findall(r"^Session (\S+) ended with (\d+) events$", run.stdout, re.M))
    assert printed == Counter((u, str(n)) for u, _, _, n in reference.sessions)
    per_type: Counter[str] = Counter()
    for kind, n in re.findall(r"^(type\d): (\d+) events$", run.stdout, re.M):
        per_type[kind] += int(n)
    assert per_type == reference.type_totals

    # Bad input, late events and analyzer failures are kept, counted, and nothing else lost.
    summary = run.summary()
    dead = run.jsonl("dead-letters.jsonl")
    assert summary["dead_letters"] == len(dead) == reference.dead_input + reference.geo_failures
    assert sum(1 for d in dead if d.get("processor") == "GeoAnalyzer") == reference.geo_failures
    assert all("IndexError" in d["reason"] for d in dead if d.get("processor"))
    assert summary["late_events"] == len(run.jsonl("late-events.jsonl")) == reference.late
    assert sum(summary["per_worker_events"]) == len(reference.accepted)
    if workers and workers > 1:
        assert all(n > 0 for n in summary["per_worker_events"])
    assert shm_segments() <= before, "shared memory left behind"
