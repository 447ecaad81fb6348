"""The same input gives the same windows, sessions and matrices on any topology.

Every run is compared with tests/reference.py, an independent single-process
computation, never with another run of the system.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import make_lines, run_config, shm_segments
from tests.integration.checks import assert_results_match
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

    # Windows (one row per period and type, merged over all shards), sessions (user, first
    # and last event time, event count), the spec's GeoMatrix summed over shards, dead
    # letters and late events.
    assert_results_match(run, reference)
    assert len({s[0] for s in reference.sessions}) < len(reference.sessions), \
        "no user had two sessions: the input does not exercise session timeouts"

    # What the spec's analyzers print reaches stdout as whole lines.
    printed = Counter(re.findall(r"^Session (\S+) ended with (\d+) events$", run.stdout, re.M))
    assert printed == Counter((u, str(n)) for u, _, _, n in reference.sessions)
    per_type: Counter[str] = Counter()
    for kind, n in re.findall(r"^(type\d): (\d+) events$", run.stdout, re.M):
        per_type[kind] += int(n)
    assert per_type == reference.type_totals

    # Analyzer failures are dead letters naming the processor and the exception.
    summary = run.summary()
    dead = run.jsonl("dead-letters.jsonl")
    assert sum(1 for d in dead if d.get("processor") == "GeoAnalyzer") == reference.geo_failures
    assert all("IndexError" in d["reason"] for d in dead if d.get("processor"))
    assert sum(summary["per_worker_events"]) == len(reference.accepted)
    if workers and workers > 1:
        assert all(n > 0 for n in summary["per_worker_events"])
    assert shm_segments() <= before, "shared memory left behind"
