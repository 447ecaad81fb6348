"""Metrics in the Prometheus text format, through ``prometheus_client``.

The figures of a run live in its snapshot (one dict); :class:`Exposition` turns
families of samples read from it into a registry of prometheus_client metric families
and its standard text (:func:`prometheus_client.generate_latest`). Names follow
Prometheus conventions: a ``bspump_cluster_`` prefix, ``_total`` on counters, base
units (seconds). ``None`` is exposed as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

PREFIX = "bspump_cluster_"


class Exposition:
    """Metric families in order; every sample carries the ``base`` labels."""

    def __init__(self, **base: Any) -> None:
        self.base = {k: str(v) for k, v in base.items()}
        self.families: list[Any] = []

    def metric(self, name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, Any], float | None]]) -> None:
        """One metric family (``counter`` or ``gauge``) and its samples."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        names = sorted({*self.base, *(k for labels, _ in samples for k in labels)})
        family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = family_type(PREFIX + name, help_text, labels=names)
        for labels, value in samples:
            values = {**self.base, **{k: str(v) for k, v in labels.items()}}
            number = math.nan if value is None else float(value)
            family.add_metric([values.get(k, "") for k in names], number)
        self.families.append(family)

    def text(self) -> str:
        """The whole exposition."""
        from prometheus_client import generate_latest
        from prometheus_client.registry import Collector, CollectorRegistry

        families = self.families

        class _Snapshot(Collector):
            def collect(self) -> Iterator[Any]:
                yield from families

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot())
        return generate_latest(registry).decode("utf-8")
