"""The application: configuration, the pipelines, the matrices, and the process role."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bspump.arrays import ArrayAllocator, PrivateArrays
from bspump.config import Config
from bspump.errors import ConfigError

if TYPE_CHECKING:
    from bspump.matrix import Matrix
    from bspump.pipeline import Pipeline

ROLE_LOCAL = "local"
ROLE_COORDINATOR = "coordinator"
ROLE_SHARD = "shard"


@dataclass(frozen=True)
class RunInfo:
    """Where this process stands in a cluster run."""

    role: str
    run_id: str
    worker: int = 0
    workers: int = 1
    output_dir: Path = Path("out")
    event_time: bool = False
    # Event-time span a window ring must hold beyond its window: lateness, merge lag, a tick.
    ring_span: float = 0.0
    max_record_bytes: int = 1 << 20
    max_record_depth: int = 64
    key_groups: int = 256
    # A partition task's Kafka partition ("topic:N"): its source reads only that one.
    partition: str | None = None


class Application:
    """Holds the configuration, the pipelines and the matrices of one process.

    Users receive it as ``app`` in their constructors. In a cluster run the runtime
    creates it with a :class:`RunInfo`, and on a worker (``shard`` role) with an
    ``arrays`` allocator that puts matrices and window rings in shared memory, so the
    coordinator can merge them in place; without one they are private numpy arrays.
    """

    def __init__(self, config: Config | str | os.PathLike[str] | None = None,
                 run: RunInfo | None = None, arrays: ArrayAllocator | None = None) -> None:
        if config is None:
            config = Config()
        elif not isinstance(config, Config):
            config = Config.load(config)
        self.Config = config
        self.Run = run
        self.Pipelines: dict[str, Pipeline] = {}
        self.Matrices: dict[str, Matrix] = {}
        self.Arrays: ArrayAllocator = arrays if arrays is not None else PrivateArrays()
        self._used_sections: set[str] = set()

    @property
    def role(self) -> str:
        """``local`` (plain Python), ``coordinator`` or ``shard``."""
        return self.Run.role if self.Run is not None else ROLE_LOCAL

    def add_pipeline(self, pipeline: Pipeline) -> None:
        """Register a pipeline (pipelines register themselves when created)."""
        existing = self.Pipelines.get(pipeline.Id)
        if existing is not None and existing is not pipeline:
            raise ConfigError(f"two pipelines with id {pipeline.Id!r}")
        self.Pipelines[pipeline.Id] = pipeline

    def get_pipeline(self, pipeline_id: str) -> Pipeline:
        """The pipeline with this id."""
        return self.Pipelines[pipeline_id]

    def _register_matrix(self, matrix: Matrix) -> None:
        if matrix.Id in self.Matrices:
            raise ConfigError(f"two matrices with id {matrix.Id!r}")
        self.Matrices[matrix.Id] = matrix

    def allocate(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A zeroed array: in shared memory on a worker, private memory elsewhere."""
        return self.Arrays.allocate(name, shape, dtype)

    def reallocate(self, name: str, old: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A zeroed array of ``shape`` in place of ``name``'s, ``old`` copied into its corner.

        On a worker it is a new shared segment; the coordinator learns of it through
        :meth:`segment_info` (see :class:`bspump.arrays.ArrayAllocator`).
        """
        if any(n < o for n, o in zip(shape, old.shape, strict=True)):
            raise ValueError(f"{name}: cannot shrink {old.shape} to {shape}")
        return self.Arrays.reallocate(name, old, shape)

    def segment_info(self, name: str) -> list[object] | None:
        """[segment name, shape, dtype] of a shared array, now told to the coordinator."""
        return self.Arrays.segment_info(name)

    def segment_table(self) -> dict[str, list[object]]:
        """Logical name -> [segment name, shape, dtype] of every shared array (the hello)."""
        table = {}
        for logical in self.Arrays.shared_names():
            info = self.segment_info(logical)
            assert info is not None
            table[logical] = info
        return table
