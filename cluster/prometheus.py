"""The Prometheus text exposition format, written by hand (no client library at run time).

Names follow Prometheus conventions: a ``bspump_cluster_`` prefix, ``_total`` for
counters, base units (seconds).
"""

from __future__ import annotations

import math
from typing import Any

PREFIX = "bspump_cluster_"


def _escape(value: Any) -> str:
    """A label value: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    """A HELP text: backslash and newline escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


class Exposition:
    """Metric families in order; every sample carries the ``base`` labels."""

    def __init__(self, **base: Any) -> None:
        self.lines: list[str] = []
        self.base = base

    def metric(self, name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, Any], float | None]]) -> None:
        """One metric family: HELP, TYPE and its samples (None is written as NaN)."""
        full = PREFIX + name
        self.lines.append(f"# HELP {full} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            self.lines.append(f"{full}{_labels({**self.base, **labels})} {_number(value)}")

    def text(self) -> str:
        """The whole exposition."""
        return "\n".join(self.lines) + "\n"
