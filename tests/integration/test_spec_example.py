"""How a user tests an analyzer: the documentation's AggregationPipeline, run with
bspump.testing.run_pipeline in one process, on one worker and on three workers.

The expected windows and sessions are worked out by hand from the eight events below.
"""

from __future__ import annotations

import re
from collections import Counter

from bspump.testing import run_pipeline
from tests.conftest import CONFIGS

T0 = 1767225600  # 2026-01-01T00:00:00Z, a whole minute

EVENTS = [
    {"user_id": "alice", "type": "click", "timestamp": T0 + 5, "value": 1.0},
    {"user_id": "bob", "type": "click", "timestamp": T0 + 10, "value": 2.0},
    {"user_id": "alice", "type": "view", "timestamp": T0 + 30, "value": 1.5},
    {"user_id": "bob", "type": "click", "timestamp": T0 + 65, "value": 2.0},
    {"user_id": "alice", "type": "click", "timestamp": T0 + 70, "value": 1.0},
    {"type": "click", "timestamp": T0 + 80},  # no user_id: a dead letter
    {"user_id": "alice", "type": "buy", "timestamp": T0 + 2000, "value": 9.0},  # new session
    {"user_id": "carol", "type": "view", "timestamp": T0 + 1000},  # behind the watermark: late
]


def test_the_documentations_pipeline_gives_the_same_results_on_every_topology(
        pipeline_workers: int) -> None:
    result = run_pipeline(
        # A Pipeline class works too; configs/ is not on this test's import path.
        "spec_examples:AggregationPipeline", EVENTS, python_path=[CONFIGS],
        workers=pipeline_workers,
        shard_key="user_id", time_field="timestamp", allowed_lateness=5,
        # The spec's HourlyCountAnalyzer also counts every event under its type.
        processors={"HourlyCountAnalyzer": {"count_field": "type"}})

    assert result.window_counts("HourlyCountAnalyzer") == {
        (T0, T0 + 60, "click"): 2, (T0, T0 + 60, "view"): 1,
        (T0 + 60, T0 + 120, "click"): 2,
        (T0 + 1980, T0 + 2040, "buy"): 1,
    }
    assert result.session_list("UserSessionAnalyzer") == [
        ("alice", T0 + 5, T0 + 70, 3), ("alice", T0 + 2000, T0 + 2000, 1),
        ("bob", T0 + 10, T0 + 65, 2),
    ]
    # What the analyzers print comes back, from whichever worker printed it.
    printed = Counter(re.findall(r"^Session (\w+) ended with (\d+) events$", result.stdout,
                                 re.M))
    assert printed == Counter({("alice", "3"): 1, ("alice", "1"): 1, ("bob", "2"): 1})
    # Every accepted event reaches the sink once; the rest are dead or late.
    assert sorted(e["timestamp"] - T0 for e in result.sink) == [5, 10, 30, 65, 70, 2000]
    assert [d["record"] for d in result.dead_letters] == [EVENTS[5]]
    assert [late["record"] for late in result.late_events] == [EVENTS[7]]
