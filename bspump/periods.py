"""Periods of event time: which one a time falls in, where the next starts, when one closed.

A period of resolution ``res`` is numbered ``p = floor(t / res)`` and covers
``[p * res, (p + 1) * res)``. It is closed once the watermark has reached its end:
no record the watermark lets in can fall into it any more. Windows, the coordinator's
ticks and the merge of closed windows all use this one rule.
"""

from __future__ import annotations

import math


def period_of(t: float, res: float) -> int:
    """The number of the period that time ``t`` falls in."""
    return math.floor(t / res)


def period_end(period: float, res: float) -> float:
    """Where period ``period`` ends (and the next one starts)."""
    return (period + 1) * res


def next_boundary(t: float, res: float) -> float:
    """The first period boundary after time ``t``."""
    return period_end(period_of(t, res), res)


def is_closed(period: float, res: float, watermark: float) -> bool:
    """Whether period ``period`` has closed at ``watermark``."""
    return period_end(period, res) <= watermark
