"""``coordinator.merge``: worker reports in, merged windows, sessions and anomalies out."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from cluster import wire
from cluster.contract import convert
from coordinator.runtime import Coordinator
from tests.conftest import T0

AID = "HourlyCountAnalyzer"  # the seed pipeline's TimeWindowAnalyzer, resolution 60 s
RES = 60.0
PERIOD = int(T0 // RES)
SLOTS = 4


def lines_of(coord: Coordinator, name: str) -> list[dict[str, Any]]:
    coord.outputs.flush()
    path = coord.outputs.dir / name
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def report(news: dict[str, Any]) -> wire.ShardReport:
    """A report as the coordinator gets it: the map a worker sends, decoded."""
    return convert(news, wire.ShardReport, "report")


def two_workers(make_coordinator: Callable[..., Coordinator]) -> Coordinator:
    """Two workers whose rings hold one period: w0 type0 3, type1 1; w1 type1 2, type2 5."""
    coord = make_coordinator([json.dumps({"user_id": "u1", "timestamp": T0})], workers=2)
    window = coord.merger.mergers[AID]
    for w, counts in enumerate([[3, 1], [2, 5]]):
        ring = np.zeros((SLOTS, 8))
        ring[PERIOD % SLOTS, :2] = counts
        window.attach(w, ring)
    return coord


def test_a_period_is_written_once_when_every_worker_has_closed_it(
        make_coordinator: Callable[..., Coordinator]) -> None:
    coord = two_workers(make_coordinator)
    m = coord.merger
    closed = [[PERIOD, PERIOD % SLOTS]]
    m.apply(0, report({"analyzers": {AID: {"keys": ["type0", "type1"], "closed": closed}}}))
    assert m.merge(coord.frontier.ack(0, (PERIOD + 1) * RES)) == []  # worker 1 is behind
    m.apply(1, report({"analyzers": {AID: {"keys": ["type1", "type2"], "closed": closed}}}))
    rows = m.merge(coord.frontier.ack(1, (PERIOD + 1) * RES))
    start, end = PERIOD * RES, (PERIOD + 1) * RES
    expected = [{"window_start": start, "window_end": end, "key": "type0", "count": 3},
                {"window_start": start, "window_end": end, "key": "type1", "count": 3},
                {"window_start": start, "window_end": end, "key": "type2", "count": 5}]
    assert rows == [{"analyzer": AID, **row} for row in expected]
    assert m.merge((PERIOD + 1) * RES) == [] and m.merge(PERIOD * RES) == []
    assert lines_of(coord, f"SeedPipeline.{AID}.windows.jsonl") == expected
    assert coord.counts.window_rows == 3 and coord.frontier.merged == end
    page = m.window_history[AID]
    assert list(page) == [{"window_start": start, "total": 11, "keys": 3,
                           "top": [["type2", 5], ["type0", 3], ["type1", 3]]}]


def test_sessions_dead_letters_counts_and_keyed_anomalies_of_a_report(
        make_coordinator: Callable[..., Coordinator]) -> None:
    coord = two_workers(make_coordinator)
    coord.merger.apply(1, report({
        "analyzers": {
            "UserSessionAnalyzer": {"ended": [["u1", T0, T0 + 100.5, 7]]},
            "RateAnomalyDetector": {"anomalies": [["u2", T0 + 5, 40.0, 10.0, 2.0, 15.0]]}},
        "dead": [{"reason": "IndexError: boom", "record": {"user_id": "u3"},
                  "processor": "GeoAnalyzer", "event_time": T0 + 1}],
        "events_in": 10, "events_failed": 1, "events_batched": 4, "open_sessions": 3}))
    assert lines_of(coord, "SeedPipeline.UserSessionAnalyzer.sessions.jsonl") == [
        {"key": "u1", "start": T0, "end": T0 + 100.5, "events": 7}]
    assert lines_of(coord, "SeedPipeline.RateAnomalyDetector.anomalies.jsonl") == [
        {"key": "u2", "event_time": T0 + 5, "value": 40.0, "mean": 10.0, "std": 2.0,
         "score": 15.0}]
    assert lines_of(coord, "dead-letters.jsonl") == [
        {"reason": "IndexError: boom", "worker": 1, "processor": "GeoAnalyzer",
         "event_time": T0 + 1, "record": {"user_id": "u3"}}]
    c = coord.counts
    assert (c.sessions_ended, c.dead, c.processed, c.failed, c.batched, c.open_sessions) == (
        1, 1, [0, 10], [0, 1], [0, 4], [0, 3])
    assert coord.merger.anomaly_counts() == {"RateAnomalyDetector": 1}
    # Events a worker reports count in the ledger: processed = taken in - failed.
    assert coord.counts.ledger().processed == 9


def test_rows_and_anomalies_go_to_a_sink_that_publishes_them(
        make_coordinator: Callable[..., Coordinator]) -> None:
    coord = two_workers(make_coordinator)
    published: list[tuple[str, list[dict[str, Any]]]] = []

    class Publishing:
        async def publish_windows(self, rows: list[dict[str, Any]]) -> None:
            published.append(("windows", rows))

        async def publish_anomalies(self, rows: list[dict[str, Any]]) -> None:
            published.append(("anomalies", rows))

    coord.pipeline.Sink = Publishing()
    m = coord.merger
    closed = [[PERIOD, PERIOD % SLOTS]]
    m.apply(0, report({"analyzers": {AID: {"keys": ["type0"], "closed": closed},
                              "RateAnomalyDetector": {"anomalies": [["u2", T0, 4, 1, 1, 3]]}}}))
    m.apply(1, report({"analyzers": {AID: {"keys": ["type1"], "closed": closed}}}))
    asyncio.run(m.merge_all())
    assert [kind for kind, _ in published] == ["windows", "anomalies"]
    assert [(r["key"], r["count"]) for r in published[0][1]] == [("type0", 3), ("type1", 2)]
    assert published[1][1][0]["key"] == "u2"
    asyncio.run(m.publish([]))  # nothing new: nothing published again
    assert len(published) == 2 and coord.frontier.merged == math.inf


def test_matrices_are_summed_over_the_shards(
        make_coordinator: Callable[..., Coordinator]) -> None:
    coord = two_workers(make_coordinator)
    m = coord.merger
    own = m.matrices["GeoMatrix"].Array
    assert np.array_equal(m.summed("GeoMatrix"), own)  # before any worker said hello
    a, b = np.ones_like(own), np.full_like(own, 2)
    m.shard_matrices["GeoMatrix"] = [a, b]
    assert np.array_equal(m.summed("GeoMatrix"), np.full_like(own, 3))
