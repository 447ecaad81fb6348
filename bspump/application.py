"""The application: configuration, the pipelines, the matrices, and the process role."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cluster.config import Config
from cluster.errors import ConfigError
from cluster.shm import Segment, segment_name

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
    key_groups: int = 256
    # A partition task's Kafka partition ("topic:N"): its source reads only that one.
    partition: str | None = None


class Application:
    """Holds the configuration, the pipelines and the matrices of one process.

    Users receive it as ``app`` in their constructors. In a cluster run the runtime
    creates it with a :class:`RunInfo`: on a worker (``shard`` role) matrices live in
    shared memory so the coordinator can merge them in place.
    """

    def __init__(self, config: Config | str | os.PathLike[str] | None = None,
                 run: RunInfo | None = None) -> None:
        if config is None:
            config = Config()
        elif not isinstance(config, Config):
            config = Config.load(config)
        self.Config = config
        self.Run = run
        self.Pipelines: dict[str, Pipeline] = {}
        self.Matrices: dict[str, Matrix] = {}
        self.Segments: dict[str, Segment] = {}
        # Logical name -> how many times its array was replaced by a bigger one.
        self._generations: dict[str, int] = {}
        # Logical names whose current segment someone else has been told about.
        self._announced: set[str] = set()
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
        run = self.Run
        if run is not None and run.role == ROLE_SHARD:
            if name in self.Segments:
                raise ConfigError(f"two shared arrays named {name!r}")
            seg = Segment.create(segment_name(run.run_id, f"w{run.worker}", name), shape, dtype)
            self.Segments[name] = seg
            return seg.array
        return np.zeros(shape, dtype=dtype)

    def reallocate(self, name: str, old: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A zeroed array of ``shape`` in place of ``name``'s, ``old`` copied into its corner.

        On a worker it is a new segment named with the next generation (``<name>.g1``,
        ``.g2``, ...), so names stay unique within the run. The old segment's name is
        removed here only if nobody was told about it (:meth:`segment_info`); otherwise
        the coordinator removes it once it has mapped the new one, because it may still
        have to map the old one from a report it has not read yet.
        """
        if any(n < o for n, o in zip(shape, old.shape, strict=True)):
            raise ValueError(f"{name}: cannot shrink {old.shape} to {shape}")
        corner = tuple(slice(0, n) for n in old.shape)
        run = self.Run
        if run is None or run.role != ROLE_SHARD:
            array = np.zeros(shape, dtype=old.dtype)
            array[corner] = old
            return array
        generation = self._generations.get(name, 0) + 1
        seg = Segment.create(segment_name(run.run_id, f"w{run.worker}", f"{name}.g{generation}"),
                             shape, old.dtype)
        seg.array[corner] = old
        previous = self.Segments[name]
        if name not in self._announced:
            previous.unlink()
        self._announced.discard(name)
        self._generations[name] = generation
        self.Segments[name] = seg
        return seg.array

    def segment_info(self, name: str) -> list[object] | None:
        """[segment name, shape, dtype] of a shared array, now told to the coordinator."""
        seg = self.Segments.get(name)
        if seg is None:
            return None
        self._announced.add(name)
        return [seg.name, list(seg.array.shape), seg.array.dtype.str]

    def segment_table(self) -> dict[str, list[object]]:
        """Logical name -> [segment name, shape, dtype] of every shared array (the hello)."""
        table = {}
        for logical in self.Segments:
            info = self.segment_info(logical)
            assert info is not None
            table[logical] = info
        return table
