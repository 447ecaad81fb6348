"""An independent single-process reference for the cluster's results.

Written from the semantics in the README (not from the runtime's code): one pass
over the input in order, plain dicts, no shared memory, no sharding.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np


def _time(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    return None


@dataclass
class Reference:
    """Expected results of the seed pipeline over one input."""

    accepted: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    dead_input: int = 0
    late: int = 0
    windows: set[tuple[float, float, str, float]] = field(default_factory=set)
    sessions: list[tuple[str, float, float, int]] = field(default_factory=list)
    geo: np.ndarray = field(default_factory=lambda: np.zeros((360, 180)))
    geo_failures: int = 0
    type_totals: Counter[str] = field(default_factory=Counter)


def compute(lines: list[str], *, key_field: str = "user_id", time_field: str = "timestamp",
            lateness: float = 0.0, resolution: float = 60.0, count_field: str = "type",
            session_timeout: float = 1800.0) -> Reference:
    """Run the reference over raw JSON lines."""
    ref = Reference()
    watermark = -math.inf
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            ref.dead_input += 1
            continue
        if not isinstance(event, dict) or event.get(key_field) is None:
            ref.dead_input += 1
            continue
        t = _time(event.get(time_field))
        if t is None:
            ref.dead_input += 1
            continue
        if t < watermark:
            ref.late += 1
            continue
        watermark = max(watermark, t - lateness)
        ref.accepted.append((t, event))

    counts: dict[tuple[int, str], int] = defaultdict(int)
    open_sessions: dict[str, list[Any]] = {}
    for t, event in ref.accepted:
        kind = event.get(count_field)
        if kind is not None:
            counts[(math.floor(t / resolution), kind)] += 1
            ref.type_totals[kind] += 1
        user = event[key_field]
        s = open_sessions.get(user)
        if s is not None and t - s[2] > session_timeout:
            ref.sessions.append((user, s[1], s[2], s[3]))
            s = None
        if s is None:
            open_sessions[user] = [user, t, t, 1]
        else:
            s[1] = min(s[1], t)
            s[2] = max(s[2], t)
            s[3] += 1
        lat = int(event.get("latitude", 0) + 90)
        lon = int(event.get("longitude", 0) + 180)
        if 0 <= lat < 360 and 0 <= lon < 180:
            ref.geo[lat, lon] += 1
        else:
            ref.geo_failures += 1
    ref.sessions.extend((u, a, b, n) for u, a, b, n in open_sessions.values())
    ref.windows = {(p * resolution, (p + 1) * resolution, k, n) for (p, k), n in counts.items()}
    return ref
