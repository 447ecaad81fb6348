"""Intake: event-time parsing, lateness, watermark chunks and dead letters."""

from __future__ import annotations

import json
import math
import random
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from cluster.config import PipelineSettings, ShardKeySpec
from cluster.errors import RecordError
from cluster.intake import Chunk, Intake, parse_event_time
from cluster.layout import Layout

T0 = 1767225600.0  # 2026-01-01T00:00:00Z


# -- parse_event_time ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (T0, T0),
    (int(T0), T0),
    (0, 0.0),
    (T0 + 0.25, T0 + 0.25),
    ("1767225600", T0),
    ("1767225600.5", T0 + 0.5),
    (" 1767225600.5 ", T0 + 0.5),
    ("2026-01-01T00:00:00Z", T0),
    ("2026-01-01T00:00:00+00:00", T0),
    ("2026-01-01T02:00:00+02:00", T0),
    ("2025-12-31T19:00:00-05:00", T0),
    ("2026-01-01T00:00:00.250Z", T0 + 0.25),
    ("2026-01-01T00:00:00", T0),  # naive: UTC
    ("2026-01-01 00:01:00", T0 + 60),
])
def test_parse_event_time_accepts(value: Any, expected: float) -> None:
    assert parse_event_time(value) == pytest.approx(expected, abs=1e-6)


def test_naive_iso_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "XST+05")  # POSIX zone 5 hours west, no tz database needed
    time.tzset()
    try:
        _check_naive_iso()
    finally:
        monkeypatch.undo()
        time.tzset()


def _check_naive_iso() -> None:
    assert time.timezone == 5 * 3600
    naive = datetime(2030, 6, 1, 12, 30, 15)
    assert parse_event_time(naive.isoformat()) == naive.replace(tzinfo=UTC).timestamp()
    aware = datetime(2030, 6, 1, 12, 30, 15, tzinfo=timezone(timedelta(hours=-7)))
    assert parse_event_time(aware.isoformat()) == (
        naive.replace(tzinfo=UTC).timestamp() + 7 * 3600)


@pytest.mark.parametrize("value", [
    True, False, None, "yesterday", "", [T0], {"t": T0},
    "5000-01-01T00:00:00Z",  # year 5000: almost surely a unit mistake
    T0 * 1000,  # milliseconds since the epoch
    int(T0 * 1000),
    str(int(T0 * 1000)),
    T0 * 1e9,  # nanoseconds
    -1.0,
    float("nan"), float("inf"), "nan", "inf",
    10 ** 400,  # a JSON integer too large for a float
])
def test_parse_event_time_refuses(value: Any) -> None:
    with pytest.raises(RecordError):
        parse_event_time(value)


# -- Intake ----------------------------------------------------------------------------------


def make_intake(workers: int = 3, tick: float = 10.0, lateness: float = 0.0,
                time_field: str | None = "ts", key: str = "k") -> Intake:
    routing = PipelineSettings("P", ShardKeySpec(field=key), time_field=time_field,
                               allowed_lateness=lateness)
    return Intake(routing, Layout(workers, 64), tick)


def flatten(chunks: list[Chunk]) -> list[tuple[str, Any]]:
    """The stream as one worker-agnostic sequence: ("data", event) and ("wm", W) items."""
    out: list[tuple[str, Any]] = []
    for chunk in chunks:
        for events in chunk.events:
            out.extend(("data", e) for e in events)
        if chunk.watermark is not None:
            out.append(("wm", chunk.watermark))
    return out


def test_lateness_is_judged_against_the_watermark_before_each_record() -> None:
    intake = make_intake(lateness=5.0)
    times = [100.0, 96.0, 94.9, 110.0, 105.0, 104.99, 110.0, 200.0, 194.0]
    records = [{"k": f"u{i}", "ts": t} for i, t in enumerate(times)]
    result = intake.feed(records)
    # Computed here: watermark = max time so far - 5, checked before each record.
    expected_late, watermark = [], -math.inf
    for r in records:
        if r["ts"] < watermark:
            expected_late.append(r)
        else:
            watermark = max(watermark, r["ts"] - 5.0)
    assert [x.record for x in result.late] == expected_late
    assert [x.event_time for x in result.late] == [r["ts"] for r in expected_late]
    assert {x.reason for x in result.late} == {"late"}
    assert result.accepted == len(records) - len(expected_late)
    assert intake.watermark == 195.0
    accepted = [e["k"] for kind, e in flatten(result.chunks) if kind == "data"]
    assert sorted(accepted) == sorted(r["k"] for r in records if r not in expected_late)


def test_a_record_at_the_watermark_is_not_late() -> None:
    intake = make_intake(lateness=0.0)
    result = intake.feed([{"k": "a", "ts": 50.0}, {"k": "b", "ts": 50.0},
                          {"k": "c", "ts": 49.999}])
    assert result.accepted == 2
    assert [r.record["k"] for r in result.late] == ["c"]


def test_lateness_carries_over_between_batches() -> None:
    intake = make_intake(lateness=2.0)
    intake.feed([{"k": "a", "ts": 100.0}])
    result = intake.feed([{"k": "b", "ts": 97.0}, {"k": "c", "ts": 98.0}])
    assert [r.record["k"] for r in result.late] == ["b"]
    assert result.accepted == 1


def test_watermarks_only_when_a_tick_boundary_is_crossed() -> None:
    intake = make_intake(tick=10.0, lateness=0.0)
    times = [3.0, 5.0, 9.99, 10.0, 15.0, 19.0, 21.0, 22.0, 45.0, 46.0]
    result = intake.feed([{"k": "u", "ts": t} for t in times])
    wms = [c.watermark for c in result.chunks if c.watermark is not None]
    # The first event sets the watermark; afterwards one per tick period entered.
    assert wms == [3.0, 10.0, 21.0, 45.0]
    # The last chunk carries the rest of the data and no watermark.
    assert result.chunks[-1].watermark is None
    stream = flatten(result.chunks)
    assert [e["ts"] if k == "data" else ("wm", e) for k, e in stream] == [
        ("wm", 3.0), 3.0, 5.0, 9.99, ("wm", 10.0), 10.0, 15.0, 19.0, ("wm", 21.0), 21.0,
        22.0, ("wm", 45.0), 45.0, 46.0]


def test_watermark_is_never_ahead_of_data_sent_before_it() -> None:
    rng = random.Random(3)
    intake = make_intake(workers=4, tick=7.0, lateness=12.0)
    t = T0
    stream: list[tuple[str, Any]] = []
    late = 0
    for _ in range(20):
        batch = []
        for _ in range(250):
            t += rng.expovariate(2.0)
            jitter = rng.uniform(0.0, 20.0)
            batch.append({"k": f"u{rng.randrange(40)}", "ts": t - jitter})
        result = intake.feed(batch)
        late += len(result.late)
        stream.extend(flatten(result.chunks))
        # Each worker's chunk carries times aligned with its events.
        for chunk in result.chunks:
            for times, events in zip(chunk.times, chunk.events, strict=True):
                assert times == [e["ts"] for e in events]
    assert late > 0  # the jitter is larger than the lateness: some are late
    last_wm = -math.inf
    watermarks = []
    for kind, value in stream:
        if kind == "wm":
            assert value >= last_wm
            last_wm = value
            watermarks.append(value)
        else:
            assert value["ts"] >= last_wm, "event behind a watermark that was already sent"
    # Watermarks fall in distinct tick periods, one per period entered.
    periods = [math.floor(w / 7.0) for w in watermarks]
    assert periods == sorted(set(periods))


def test_events_go_to_the_worker_owning_their_key() -> None:
    intake = make_intake(workers=3)
    layout = Layout(3, 64)
    records = [{"k": f"user{i}", "ts": T0 + i} for i in range(300)]
    result = intake.feed(records)
    for chunk in result.chunks:
        for w, events in enumerate(chunk.events):
            assert all(layout.worker_of(e["k"]) == w for e in events)
    # Order is kept per worker.
    per_worker: dict[int, list[Any]] = {}
    for chunk in result.chunks:
        for w, events in enumerate(chunk.events):
            per_worker.setdefault(w, []).extend(events)
    for w, events in per_worker.items():
        assert events == [r for r in records if layout.worker_of(r["k"]) == w]


def test_dead_letters_name_the_missing_field() -> None:
    intake = make_intake()
    records: list[Any] = [
        {"k": "a", "ts": T0},
        {"ts": T0},
        {"k": "b"},
        {"k": "c", "ts": "yesterday"},
        {"k": None, "ts": T0},
        [1, 2],
        {"k": "d", "ts": T0 * 1000},
    ]
    result = intake.feed(records)
    assert result.accepted == 1
    reasons = {repr(d.record): d.reason for d in result.dead}
    assert len(result.dead) == 6
    assert "'k'" in reasons[repr({"ts": T0})]
    assert "missing" in reasons[repr({"ts": T0})]
    assert "'ts'" in reasons[repr({"k": "b"})]
    assert "missing" in reasons[repr({"k": "b"})]
    assert "yesterday" in reasons[repr({"k": "c", "ts": "yesterday"})]
    assert "'k'" in reasons[repr({"k": None, "ts": T0})]
    assert "not an object" in reasons[repr([1, 2])]
    assert "1970..3000" in reasons[repr({"k": "d", "ts": T0 * 1000})]
    # A dead record does not move the watermark.
    assert intake.watermark == T0


@pytest.mark.parametrize("malformed", [False, True], ids=["all JSON", "one malformed"])
def test_raw_lines_reject_the_same_records_as_decoded_ones(malformed: bool) -> None:
    # The raw route decodes only the key and time: each record it cannot route must still
    # come back as a dead letter naming its line, exactly those the decoded route rejects.
    records: list[Any] = [
        {"k": "a", "ts": T0},
        {"ts": T0 + 1},
        {"k": "b"},
        {"k": "c", "ts": "yesterday"},
        {"k": None, "ts": T0 + 2},
        {"k": "d", "ts": T0 * 1000},
        {"k": "e", "ts": T0 + 3},
    ]
    lines = [json.dumps(r).encode() for r in records]
    if malformed:
        lines.insert(3, b'{"k": "x", "ts"')
    decoded = make_intake().feed([json.loads(x) if x.endswith(b"}") else x for x in lines])
    expected = {i + 1 for i, x in enumerate(lines)
                if any(d.record == (json.loads(x) if x.endswith(b"}") else x)
                       for d in decoded.dead)}
    raw = make_intake().feed_raw(lines, lambda i: f"in:{i + 1}")
    named = {int(d.reason.split(":")[1]) for d in raw.dead}
    assert named == expected
    assert len(raw.dead) == len(expected) == len(lines) - 2
    assert raw.accepted == decoded.accepted == 2


def test_processing_time_stamps_records_with_now() -> None:
    intake = make_intake(time_field=None, tick=5.0)
    result = intake.feed([{"k": "a"}, {"k": "b", "ts": 1.0}, {"x": 1}], now=T0 + 1)
    assert result.accepted == 2
    assert [d.reason for d in result.dead] == ["missing shard key field 'k'"]
    assert len(result.chunks) == 1 and result.chunks[0].watermark is None
    assert sorted(t for times in result.chunks[0].times for t in times) == [T0 + 1] * 2
    assert intake.clock(T0 + 1) == T0 + 1  # the first clock sets the watermark
    assert intake.clock(T0 + 4.9) is None  # same 5 s tick
    assert intake.clock(T0 + 5.0) == T0 + 5.0
    assert intake.clock(T0 + 7.0) is None


def test_equal_keys_of_different_types_route_alike_in_any_order() -> None:
    for order in ([1, True, 1.0], [True, 1.0, 1], [1.0, 1, True]):
        intake = make_intake(workers=8)
        result = intake.feed([{"k": k, "ts": T0} for k in order])
        owners = {w for c in result.chunks for w, ev in enumerate(c.events) if ev}
        assert owners == {Layout(8, 64).worker_of(1)}


# -- one record rule on every route (issue 11 item 2) ----------------------------------------


def nested(depth: int) -> str:
    """A JSON array nested ``depth`` levels deep."""
    return "[" * depth + "]" * depth


def raw_lines(n: int) -> list[bytes]:
    return [b'{"k": "u%d", "ts": %r}' % (i, T0 + i) for i in range(n)]


def where_line(i: int) -> str:
    return f"in.jsonl:{i + 1}"


def accepted_events(result: Any) -> list[Any]:
    return [e for c in result.chunks for events in c.events for e in events]


@pytest.mark.parametrize("depth", [65, 1000, 5000])
def test_raw_record_nested_too_deep_is_one_dead_letter(depth: int) -> None:
    lines = raw_lines(10)
    bad = b'{"k": "u1", "ts": %r, "x": %s}' % (T0 + 3.5, nested(depth).encode())
    lines.insert(4, bad)
    intake = make_intake()
    result = intake.feed_raw(lines, where_line)
    assert result.accepted == 10
    assert sorted(accepted_events(result)) == sorted(raw_lines(10))
    assert len(result.dead) == 1
    assert result.dead[0].reason == "in.jsonl:5: record nests deeper than max_record_depth=64"
    assert isinstance(result.dead[0].record, str) and len(result.dead[0].record) < 600


def test_raw_record_at_the_depth_limit_is_kept() -> None:
    # 64 levels: the object itself and 63 arrays inside it.
    line = b'{"k": "a", "ts": %r, "x": %s}' % (T0, nested(63).encode())
    result = make_intake().feed_raw([line], where_line)
    assert result.accepted == 1 and result.dead == []


def test_raw_brackets_inside_strings_do_not_count_as_nesting() -> None:
    line = b'{"k": "a", "ts": %r, "x": "%s"}' % (T0, b"[{" * 500)
    result = make_intake().feed_raw([line], where_line)
    assert result.accepted == 1 and result.dead == []


@pytest.mark.parametrize("depth", [65, 1000])
def test_decoded_record_nested_too_deep_is_one_dead_letter(depth: int) -> None:
    deep: Any = []
    for _ in range(depth - 2):
        deep = [deep]
    records = [{"k": "a", "ts": T0}, {"k": "b", "ts": T0, "x": deep}, {"k": "c", "ts": T0}]
    result = make_intake().feed(records, where=lambda i: f"stdin:{i + 1}")
    assert result.accepted == 2
    assert [d.reason for d in result.dead] == [
        "stdin:2: record nests deeper than max_record_depth=64"]
    assert len(result.dead[0].record) < 600  # bounded text, never the deep value


def test_dead_letter_on_every_route_names_place_and_reason() -> None:
    # Per record: the place the source gave.
    result = make_intake().feed([{"k": "a", "ts": T0}, {"ts": T0}],
                                where=lambda i: f"in.csv:{i + 2}")
    assert [d.reason for d in result.dead] == ["in.csv:3: missing shard key field 'k'"]
    assert result.dead[0].record == {"ts": T0}
    # Raw: file:line and a preview of the line.
    lines = [b'{"k": "a", "ts": 1e300}', b'{"k": "a", "ts": %r}' % T0, b"{oops" + b"x" * 2000]
    result = make_intake().feed_raw(lines, where_line)
    dead = {d.reason.split(": ", 1)[0]: d for d in result.dead}
    assert sorted(dead) == ["in.jsonl:1", "in.jsonl:3"]
    assert "event time" in dead["in.jsonl:1"].reason and "1970..3000" in dead["in.jsonl:1"].reason
    assert "malformed JSON" in dead["in.jsonl:3"].reason
    assert dead["in.jsonl:3"].record == "{oops" + "x" * 507 + "... (2005 bytes)"
    # Columnar: the row, and the reason.
    from bspump.batch import EventBatch

    ts = np.array([T0, -5.0])
    batch = EventBatch(ts, {"k": np.array([1, 2]), "ts": ts})
    result = make_intake().feed_columns(batch)
    assert result.accepted == 1
    assert [d.reason for d in result.dead] == [
        "event time -5.0 is outside 1970..3000 (epoch seconds expected)"]
    assert result.dead[0].record["k"] == 2
