"""Anomalies: a record of something unusual an analyzer found."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Anomaly:
    """An unusual value: what was seen, how far it is from normal, and where.

    ``score`` is in units the detector chooses (for a z-score detector, standard
    deviations). ``as_dict()`` gives a JSON-ready form to attach to an event.
    """

    key: Any = None
    value: float = 0.0
    score: float = 0.0
    event_time: float | None = None
    kind: str = "anomaly"
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The anomaly as a plain dict."""
        return {"kind": self.kind, "key": self.key, "value": self.value, "score": self.score,
                "event_time": self.event_time, **self.details}
