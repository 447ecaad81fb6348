"""The far-ahead rule: one bad clock cannot move the watermark; a real jump gets through.

The expected outcome of every record is computed here by a plain sequential loop over
the rule as the README states it, independently of the intake's vectorized code."""

from __future__ import annotations

import itertools
import json
import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.config import PipelineSettings, ShardKeySpec
from cluster.intake import Intake, IntakeResult
from cluster.layout import Layout

T0 = 1767225600.0


def make_intake(jump: float = 3600.0, confirm: int = 5, lateness: float = 0.0) -> Intake:
    routing = PipelineSettings("P", ShardKeySpec(field="k"), time_field="ts",
                               allowed_lateness=lateness, max_time_jump=jump,
                               time_jump_confirm=confirm)
    return Intake(routing, Layout(2, 16), 60.0)


def reference(times: list[float], jump: float, confirm: int, lateness: float
              ) -> dict[int, str]:
    """The outcome of each record by index: accepted, late or refused (sequential rule)."""
    outcome: dict[int, str] = {}
    front, watermark = -math.inf, -math.inf
    held: list[int] = []
    since = 0

    def accept(i: int) -> None:
        nonlocal front, watermark
        if times[i] < watermark:
            outcome[i] = "late"
            return
        outcome[i] = "accepted"
        front = max(front, times[i])
        watermark = max(watermark, front - lateness)

    for i, t in enumerate(times):
        if math.isfinite(front) and t > front + jump:
            held.append(i)
            if len(held) >= confirm:
                for h in held:
                    accept(h)
                held, since = [], 0
            continue
        accept(i)
        if held:
            since += 1
            if since >= confirm:
                for h in held:
                    outcome[h] = "refused"
                held, since = [], 0
    for h in held:  # end of input: released
        accept(h)
    return outcome


def run(intake: Intake, times: list[float], cuts: list[int]) -> tuple[dict[int, str],
                                                                        list[IntakeResult]]:
    """Feed the records in batches cut at ``cuts``; the outcome of each by index."""
    records = [{"k": f"u{i % 7}", "ts": t, "i": i} for i, t in enumerate(times)]
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(records))), len(records)]
    results = []
    for a, b in itertools.pairwise(bounds):
        r = intake.feed(records[a:b])
        assert r.accepted + len(r.dead) + len(r.late) + r.held == b - a, "batch ledger"
        results.append(r)
    results.append(intake.release_held())
    outcome: dict[int, str] = {}
    for r in results:
        for chunk in r.chunks:
            for events in chunk.events:
                for e in events:
                    outcome[e["i"]] = "accepted"
        for x in r.late:
            outcome[x.record["i"]] = "late"
        for x in r.dead:
            outcome[x.record["i"]] = "refused"
    return outcome, results


def test_one_record_a_day_ahead_is_refused_and_nothing_after_it_is_late() -> None:
    times = [T0 + i for i in range(10_000)]
    times[3000] += 86_400
    intake = make_intake(confirm=100)
    outcome, results = run(intake, times, list(range(0, 10_000, 700)))
    assert [i for i, o in outcome.items() if o != "accepted"] == [3000]
    assert outcome[3000] == "refused"
    dead = [x for r in results for x in r.dead]
    assert "timestamp too far ahead" in dead[0].reason
    assert "max_time_jump = 3600 s" in dead[0].reason
    assert intake.watermark == T0 + 9999
    assert intake.jumps.counts() == {"held": 0, "released": 0, "refused": 1}


def test_a_real_jump_is_confirmed_and_every_record_after_it_gets_in() -> None:
    times = [T0 + i for i in range(500)] + [T0 + 7200 + i for i in range(500)]
    intake = make_intake(confirm=50)
    outcome, _ = run(intake, times, [100, 480, 510, 520, 900])
    assert set(outcome.values()) == {"accepted"}
    assert len(outcome) == 1000
    assert intake.jumps.counts() == {"held": 0, "released": 50, "refused": 0}
    assert intake.watermark == T0 + 7200 + 499


def test_records_still_held_at_the_end_of_input_are_released() -> None:
    times = [T0 + i for i in range(100)] + [T0 + 10_000 + i for i in range(3)]
    intake = make_intake(confirm=10)
    outcome, results = run(intake, times, [])
    assert set(outcome.values()) == {"accepted"} and len(outcome) == 103
    assert results[-1].accepted == 3 and results[-1].held == -3


def test_held_records_survive_a_checkpoint() -> None:
    intake = make_intake(confirm=10)
    lines = [json.dumps({"k": "a", "ts": T0 + i}).encode() for i in range(20)]
    lines.append(json.dumps({"k": "b", "ts": T0 + 50_000}).encode())
    r = intake.feed_raw(lines, lambda i: f"f:{i + 1}")
    assert r.held == 1
    state = json.loads(json.dumps(intake.state()))  # as a manifest holds it
    restored = make_intake(confirm=10)
    restored.set_state(state)
    assert restored.jumps.counts() == {"held": 1, "released": 0, "refused": 0}
    more = [json.dumps({"k": "a", "ts": T0 + 21 + i}).encode() for i in range(10)]
    r2 = restored.feed_raw(more, lambda i: f"f:{i + 22}")
    assert [x.record for x in r2.dead] == [lines[-1]]
    assert r2.held == -1 and r2.accepted == 10


def test_off_when_max_time_jump_is_zero() -> None:
    times = [T0 + i for i in range(100)]
    times[10] += 86_400
    intake = make_intake(jump=0.0)
    outcome, _ = run(intake, times, [])
    assert sum(o == "late" for o in outcome.values()) == 89  # today's behaviour, by choice


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), confirm=st.integers(1, 8),
       lateness=st.sampled_from([0.0, 5.0, 100.0]), cuts=st.lists(st.integers(1, 300)))
def test_the_outcome_of_every_record_follows_the_rule_whatever_the_batches(
        seed: int, confirm: int, lateness: float, cuts: list[int]) -> None:
    rng = random.Random(seed)
    times: list[float] = []
    t = T0
    for _ in range(rng.randrange(1, 300)):
        roll = rng.random()
        if roll < 0.03:
            times.append(t + rng.uniform(1000, 100_000))  # a bad clock
            continue
        if roll < 0.05:
            t += rng.uniform(1000, 20_000)  # a real gap
        t += rng.expovariate(1.0)
        times.append(t - rng.uniform(0, 20))
    expected = reference(times, 900.0, confirm, lateness)
    outcome, _ = run(make_intake(jump=900.0, confirm=confirm, lateness=lateness), times, cuts)
    assert outcome == expected


def test_reference_sanity() -> None:
    got: Any = reference([0.0, 1.0, 5000.0, 2.0, 3.0], 100.0, 2, 0.0)
    assert got == {0: "accepted", 1: "accepted", 2: "refused", 3: "accepted", 4: "accepted"}
