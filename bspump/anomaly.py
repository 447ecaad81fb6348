"""Anomalies: a record of something unusual, and a per-key detector for a cluster."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bspump.keys import key_group
from bspump.processor import Analyzer
from bspump.state import RestoreInfo, StateReader, StateWriter

if TYPE_CHECKING:
    from bspump.application import Application
    from bspump.pipeline import Pipeline


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


class KeyedAnomalyDetector(Analyzer):
    """The documentation's rolling 3-sigma rule, kept per key: one answer on any workers.

    For each event, the value of ``value_field`` joins the last ``window`` values of its
    key (``key_field``, which should be the shard key: a key's events then reach one
    worker, in input order). Once a key has ``window`` values, the event is an anomaly
    when ``|value - mean| > threshold * std`` of those values (population std, the new
    value included, as in the documentation); the event then gets ``anomaly = True`` and
    ``anomaly_score``, and the coordinator writes it to
    ``<output_dir>/<pipeline>.<id>.anomalies.jsonl``. An event without a numeric value,
    or without the key, is passed on unjudged. The windows are kept in checkpoints by
    key group, so they follow their keys to whichever worker owns them after a restore.
    """

    ConfigDefaults: dict[str, Any] = {"key_field": "user_id", "value_field": "value",
                                      "window": 100, "threshold": 3.0}
    _FRAMEWORK_ATTRS = frozenset({"key_field", "value_field", "window", "threshold"})

    def __init__(self, app: Application, pipeline: Pipeline, id: str | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, pipeline, id, config)
        self.key_field = str(self.Config["key_field"])
        self.value_field = str(self.Config["value_field"])
        self.window = int(self.Config["window"])
        self.threshold = float(self.Config["threshold"])
        if self.window < 2:
            raise self.config_error("window", f"must be at least 2, got {self.window}")
        if not self.threshold > 0:
            raise self.config_error("threshold", f"must be positive, got {self.threshold}")
        self._values: dict[Any, deque[float]] = {}
        self._found: list[list[Any]] = []

    def evaluate(self, context: dict[str, Any], event: Any) -> Any:
        """Add the event's value to its key's window; flag the event when it stands out."""
        key = event.get(self.key_field)
        value = event.get(self.value_field)
        if key is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(key, list):
            key = tuple(key)
        window = self._values.get(key)
        if window is None:
            window = self._values[key] = deque(maxlen=self.window)
        window.append(float(value))
        if len(window) < self.window:
            return None
        mean = sum(window) / len(window)
        std = math.sqrt(sum((x - mean) ** 2 for x in window) / len(window))
        if std > 0 and abs(value - mean) > self.threshold * std:
            score = abs(value - mean) / std
            event["anomaly"] = True
            event["anomaly_score"] = score
            self._found.append([key, context.get("event_time"), value, mean, std, score])
        return None

    def anomalies(self) -> list[Anomaly]:
        """The anomalies found since the last report, as Anomaly records."""
        return [Anomaly(key=k, value=v, score=s, event_time=t, kind="keyed",
                        details={"mean": m, "std": sd}) for k, t, v, m, sd, s in self._found]

    def get_state(self) -> Any:
        """Nothing per worker: the windows are kept per key group (see _checkpoint)."""
        return None

    def _checkpoint(self, writer: StateWriter) -> None:
        run = self.App.Run
        groups = run.key_groups if run is not None else 256
        by_group: dict[int, list[list[Any]]] = {}
        for key, values in self._values.items():
            by_group.setdefault(key_group(key, groups), []).append([key, list(values)])
        writer.put_object(f"keyed.{self.Id}", by_group)

    def _restore(self, readers: Sequence[StateReader], info: RestoreInfo) -> None:
        for reader in readers:
            for entries in (reader.get_object(f"keyed.{self.Id}") or {}).values():
                for key, values in entries:
                    key = tuple(key) if isinstance(key, list) else key
                    if info.owns(key):
                        self._values[key] = deque((float(v) for v in values), maxlen=self.window)

    def _report(self) -> dict[str, Any] | None:
        if not self._found:
            return None
        found, self._found = self._found, []
        return {"anomalies": found}
