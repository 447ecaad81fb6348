"""The ledger's rule: read = processed + late + dead, nothing in flight at the end."""

from __future__ import annotations

from coordinator.ledger import Ledger


def test_a_ledger_that_closes() -> None:
    led = Ledger.of(read=100, dead_input=7, late=3, routed=90, handled=90, failed=2)
    assert (led.processed, led.late, led.dead) == (88, 3, 9)
    assert led.read == led.processed + led.late + led.dead
    assert led.closes and led.problem() is None
    assert led.equation() == "read 100 = processed 88 + late 3 + dead 9"


def test_events_in_flight_keep_it_open_and_are_named() -> None:
    led = Ledger.of(read=100, dead_input=0, late=0, routed=100, handled=95, failed=0)
    assert not led.closes
    assert led.in_flight == 5
    problem = led.problem()
    assert problem is not None and "5 events were sent to workers and never reported" in problem


def test_records_that_vanish_before_routing_are_unaccounted() -> None:
    led = Ledger.of(read=100, dead_input=1, late=1, routed=97, handled=97, failed=0)
    assert led.unaccounted == 1
    assert "UNACCOUNTED 1" in led.equation()
    assert "1 records read were neither routed, late nor dead letters" in (led.problem() or "")


def test_workers_reporting_more_than_was_sent_is_a_problem_too() -> None:
    led = Ledger.of(read=10, dead_input=0, late=0, routed=10, handled=12, failed=0)
    assert not led.closes
    assert "reported 2 more events than were sent" in (led.problem() or "")


def test_held_records_are_open_until_released() -> None:
    led = Ledger.of(read=10, dead_input=0, late=0, routed=8, handled=8, failed=0, held=2)
    assert led.unaccounted == 0 and not led.closes
    assert led.as_dict()["closes"] is False
