"""EventBatch: events as numpy columns, for the batch path.

A source that can (the generator) yields columns instead of dicts; the coordinator
routes them with vectorized lookups and sends each worker its rows as raw column
bytes. When every processor of the pipeline can take a whole batch (built-in
counters, ``evaluate_batch``), no per-event dict is ever built; otherwise the worker
turns the batch into dicts and the per-event path runs unchanged.

A column is a numpy array, or a *categorical* column: integer codes plus a text
prefix, whose values are ``prefix + str(code)`` (``user_id`` = ``"u" + code``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

_LABELS: dict[str, np.ndarray] = {}


def _labels(prefix: str, size: int) -> np.ndarray:
    """``prefix + str(code)`` for codes 0..size-1, made once and shared by every batch."""
    table = _LABELS.get(prefix)
    if table is None or len(table) < size:
        grown = max(size, 2 * len(table) if table is not None else 0)
        table = np.array([prefix + str(i) for i in range(grown)], dtype=object)
        _LABELS[prefix] = table
    return table


@lru_cache(maxsize=64)
def _row_builder(names: tuple[str, ...]) -> Callable[[list[list[Any]]], list[dict[str, Any]]]:
    """A function building one dict per row with a dict display of fixed keys.

    A display with literal keys is about twice as fast as ``dict(zip(names, row))``.
    The keys are written with ``repr``, so no column name can become code.
    """
    args = ", ".join(f"v{i}" for i in range(len(names)))
    fields = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names))
    source = (f"lambda cols: [{{{fields}}} for {args}{',' if len(names) == 1 else ''} "
              f"in zip(*cols)]")
    builder: Callable[[list[list[Any]]], list[dict[str, Any]]] = eval(
        source, {"__builtins__": {"zip": zip}})
    return builder


class EventBatch:
    """Columns of equal length, ``times`` the event time of each row."""

    __slots__ = ("columns", "prefixes", "times")

    def __init__(self, times: np.ndarray, columns: dict[str, np.ndarray],
                 prefixes: dict[str, str] | None = None) -> None:
        self.times = np.asarray(times, dtype=np.float64)
        self.columns = columns
        self.prefixes = prefixes or {}
        n = len(self.times)
        for name, col in columns.items():
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} rows, times has {n}")

    def __len__(self) -> int:
        return len(self.times)

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def __getitem__(self, key: Any) -> Any:
        """A column by name, or the rows of a slice / index array as a new batch."""
        if isinstance(key, str):
            return self.columns[key]
        return EventBatch(self.times[key], {k: v[key] for k, v in self.columns.items()},
                          self.prefixes)

    def is_categorical(self, name: str) -> bool:
        """Whether a column holds codes of ``prefix + code`` values."""
        return name in self.prefixes

    def values(self, name: str) -> list[Any]:
        """A column as Python values (categorical codes become their text)."""
        col = self.columns[name]
        prefix = self.prefixes.get(name)
        if prefix is None:
            return list(col.tolist())
        return list(_labels(prefix, int(col.max()) + 1 if len(col) else 0)[col].tolist())

    def row(self, i: int) -> dict[str, Any]:
        """One row as a dict."""
        return {name: self.prefixes[name] + str(int(col[i])) if name in self.prefixes
                else col[i].item() for name, col in self.columns.items()}

    def to_dicts(self) -> list[dict[str, Any]]:
        """Every row as a dict, the same values the per-event path sees."""
        names = tuple(self.columns)
        return _row_builder(names)([self.values(name) for name in names])

    # -- wire -------------------------------------------------------------------------

    def to_wire(self) -> list[Any]:
        """msgpack-ready: raw bytes of every column (no per-row objects)."""
        cols = [[name, col.dtype.str, np.ascontiguousarray(col).tobytes(),
                 self.prefixes.get(name)] for name, col in self.columns.items()]
        return [np.ascontiguousarray(self.times).tobytes(), cols]

    @classmethod
    def from_wire(cls, data: list[Any]) -> EventBatch:
        """The inverse of :meth:`to_wire` (arrays over the received bytes, no copies)."""
        times_bytes, cols = data
        columns: dict[str, np.ndarray] = {}
        prefixes: dict[str, str] = {}
        for name, dtype, raw, prefix in cols:
            dt = np.dtype(dtype)
            if dt.hasobject:
                raise ValueError(f"column {name!r}: object arrays are not accepted")
            columns[name] = np.frombuffer(raw, dtype=dt)
            if prefix is not None:
                prefixes[name] = prefix
        return cls(np.frombuffer(times_bytes, dtype=np.float64), columns, prefixes)
