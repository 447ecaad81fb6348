"""Matrices: numpy arrays a worker keeps in shared memory, summed over shards at the end."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bspump.errors import ConfigError
from bspump.resultfiles import load_npy

if TYPE_CHECKING:
    from bspump.application import Application


class Matrix:
    """An n-dimensional numpy array, indexable like one: ``m[i, j] += 1``.

    On a worker the array lives in shared memory; the coordinator reads every
    shard's copy in place and sums them. At the end of a run the sum is written
    to ``<output_dir>/<id>.npy``.
    """

    def __init__(self, app: Application, id: str, shape: tuple[int, ...] | int = (1,),
                 dtype: Any = "float64") -> None:
        self.App = app
        self.Id = id
        shape_t = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        if not shape_t or any(s < 1 for s in shape_t):
            raise ConfigError(f"matrix {id!r}: shape must be positive, got {shape}")
        self.Array: np.ndarray = app.allocate(f"m.{id}", shape_t, np.dtype(dtype))
        app._register_matrix(self)

    @property
    def array(self) -> np.ndarray:
        """The numpy array."""
        return self.Array

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the array."""
        return tuple(self.Array.shape)

    @property
    def dtype(self) -> np.dtype:
        """Element type of the array."""
        return self.Array.dtype

    def __getitem__(self, index: Any) -> Any:
        return self.Array[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        self.Array[index] = value

    def __len__(self) -> int:
        return len(self.Array)

    def zeros(self) -> None:
        """Set every cell to zero."""
        self.Array[...] = 0


class PersistentMatrix(Matrix):
    """A matrix saved to ``path`` (``.npy`` format) and reloaded when the run starts.

    ``[matrix:ID] path = ...`` in the config overrides ``path``. The coordinator
    writes the sum over all shards at the end of a run; on the next start one shard
    loads it, so the sum stays right whatever the number of workers.
    """

    def __init__(self, app: Application, id: str, path: str | Path = "",
                 shape: tuple[int, ...] | int = (1,), dtype: Any = "float64") -> None:
        super().__init__(app, id, shape, dtype)
        section = f"matrix:{id}"
        configured = app.Config.get(section, "path")
        if app.Config.has_section(section):
            app.Config.check_keys(section, ["path"])
        chosen = configured if configured else str(path)
        if not chosen:
            raise ConfigError(f"persistent matrix {id!r}: no path (set [{section}] path)")
        self.path = Path(chosen)
        run = app.Run
        if (run is None or (run.role == "shard" and run.worker == 0)) and self.path.exists():
            self.load()

    def load(self) -> None:
        """Replace the contents with what ``path`` holds."""
        try:
            data = load_npy(self.path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"persistent matrix {self.Id!r}: cannot load {self.path}: {e}")\
                from None
        if data.shape != self.Array.shape:
            raise ConfigError(f"persistent matrix {self.Id!r}: {self.path} has shape "
                              f"{data.shape}, expected {self.Array.shape}")
        self.Array[...] = data
