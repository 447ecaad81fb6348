"""The merged-window anomaly rule, and its state across a checkpoint."""

from __future__ import annotations

import msgpack

from coordinator.anomalies import WindowAnomalies, row_of


def rows(period: int, counts: dict[object, float]) -> list[dict[str, object]]:
    return [{"window_start": period * 60, "window_end": period * 60 + 60, "key": k, "count": c}
            for k, c in counts.items()]


def test_a_key_is_judged_against_its_last_k_periods_missing_ones_as_zero() -> None:
    d = WindowAnomalies("A", 60.0, 4, 2.0)
    assert d.check(rows(0, {"a": 10})) == []
    assert d.check(rows(1, {"a": 12})) == []
    assert d.check(rows(3, {"a": 10})) == []  # period 2 had no row: a counted 0 there
    # Period 4: history 10, 12, 0, 10 -> mean 8, std sqrt(22) ~ 4.69; 30 is > 2 std away.
    found = d.check(rows(4, {"a": 30, "b": 1000}))  # b is new: not judged for 4 periods
    assert [a.key for a in found] == ["a"]
    row = row_of(found[0])
    assert row["mean"] == 8 and abs(row["std"] - 22 ** 0.5) < 1e-12
    assert abs(row["score"] - 22 / 22 ** 0.5) < 1e-12
    assert (row["window_start"], row["window_end"], row["count"]) == (240, 300, 30)


def test_no_anomaly_when_the_history_is_flat() -> None:
    d = WindowAnomalies("A", 60.0, 3, 3.0)
    for p in range(3):
        d.check(rows(p, {("k", 1): 5}))
    assert d.check(rows(3, {("k", 1): 500})) == []  # std == 0: nothing to compare with


def test_state_round_trip_gives_the_same_answers() -> None:
    stream = [rows(p, {"a": 10 + (p % 3), "b": 50 if p == 9 else 5 + p % 2}) for p in range(14)]
    whole = WindowAnomalies("A", 60.0, 5, 2.0)
    expected = [[row_of(a) for a in whole.check(r)] for r in stream]
    first = WindowAnomalies("A", 60.0, 5, 2.0)
    got = [[row_of(a) for a in first.check(r)] for r in stream[:7]]
    saved = msgpack.unpackb(msgpack.packb(first.state()), strict_map_key=False)
    second = WindowAnomalies("A", 60.0, 5, 2.0)
    second.set_state(saved)
    got += [[row_of(a) for a in second.check(r)] for r in stream[7:]]
    assert got == expected
    assert any(expected)
