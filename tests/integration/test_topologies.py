"""The same input gives the same windows, sessions and matrices on any topology.

Every run is compared with tests/reference.py, an independent single-process
computation, never with another run of the system: through bspump.testing.run_pipeline
on one process, one worker and three workers, and through the command line (its
``--in-process`` topology and four workers).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bspump.testing import run_pipeline
from tests.conftest import CONFIGS, make_lines, run_config, shm_segments
from tests.integration.checks import assert_results_match
from tests.reference import compute

# 1 and 3 workers run through run_pipeline below (pipeline_workers).
TOPOLOGIES = [("in-process", None), ("4 workers", 4)]


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


def test_run_pipeline_results_equal_reference(pipeline_workers: int, tmp_path: Path) -> None:
    # run_pipeline takes events, not lines: the lines that are JSON objects (records
    # without a user or with a bad time among them), against the reference over them.
    events = [e for line in make_lines(8000) if isinstance(e := _object(line), dict)]
    ref = compute([json.dumps(e) for e in events], lateness=30, resolution=60,
                  session_timeout=1800)
    result = run_pipeline(
        "example_pipelines:SeedPipeline", events, workers=pipeline_workers,
        python_path=[CONFIGS], shard_key="user_id", time_field="timestamp",
        allowed_lateness=30, processors={"HourlyCountAnalyzer": {"count_field": "type"}},
        ini=f"[matrix:PersistentMatrix]\npath = {tmp_path / 'persistent.npy'}\n")

    windows = result.window_counts("HourlyCountAnalyzer")
    assert {(a, b, k, n) for (a, b, k), n in windows.items()} == ref.windows
    assert result.session_list("UserSessionAnalyzer") == sorted(ref.sessions)
    np.testing.assert_array_equal(result.matrices["GeoMatrix"], ref.geo)
    assert len(result.dead_letters) == ref.dead_input + ref.geo_failures
    assert sum(1 for d in result.dead_letters
               if d.get("processor") == "GeoAnalyzer") == ref.geo_failures
    assert len(result.late_events) == ref.late
    assert len(result.sink) == len(ref.accepted) - ref.geo_failures
    printed = Counter(re.findall(r"^Session (\S+) ended with (\d+) events$", result.stdout,
                                 re.M))
    assert printed == Counter((u, str(n)) for u, _, _, n in ref.sessions)
    if result.summary is not None:
        assert result.summary["ledger"]["closes"]
        assert sum(result.summary["per_worker_events"]) == len(ref.accepted)


def _object(line: str) -> object:
    try:
        return json.loads(line)
    except ValueError:
        return None
