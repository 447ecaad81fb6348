"""The one period rule: a time's period, the next boundary, when a period has closed."""

from hypothesis import given
from hypothesis import strategies as st

from bspump.periods import is_closed, next_boundary, period_end, period_of

times = st.floats(min_value=0, max_value=4e10, allow_nan=False)
resolutions = st.sampled_from([1.0, 0.5, 60.0, 3600.0, 86400.0])


@given(times, resolutions)
def test_a_time_lies_in_its_period(t: float, res: float) -> None:
    p = period_of(t, res)
    assert p * res <= t < period_end(p, res)


@given(times, resolutions)
def test_the_next_boundary_is_the_first_multiple_after_the_time(t: float, res: float) -> None:
    b = next_boundary(t, res)
    assert t < b <= t + res
    assert b / res == round(b / res)


@given(st.integers(min_value=0, max_value=10**8), resolutions, times)
def test_a_period_is_closed_once_the_watermark_reaches_its_end(
        p: int, res: float, watermark: float) -> None:
    assert is_closed(p, res, watermark) == (watermark >= (p + 1) * res)
    assert is_closed(p, res, period_end(p, res))
    assert not is_closed(p, res, p * res)
