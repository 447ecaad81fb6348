"""Create the configured pipeline in a process of a run: import it, build it, apply the
config's source and sink overrides, validate (the coordinator, a worker, a member)."""

from __future__ import annotations

import traceback

from bspump.application import ROLE_SHARD, Application, RunInfo
from bspump.pipeline import Pipeline
from bspump.processor import Sink, Source
from cluster.config import ClusterSettings, import_object
from cluster.errors import ClusterError, ConfigError
from cluster.shm import SharedArrays


def _fail(settings: ClusterSettings, section: str, key: str, what: str,
          error: Exception) -> ConfigError:
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    at = f" ({frame.filename}:{frame.lineno})" if frame else ""
    return settings.config.error(section, key, f"{what} failed: {type(error).__name__}: "
                                               f"{error}{at}")


def load_pipeline(settings: ClusterSettings, run: RunInfo) -> tuple[Application, Pipeline]:
    """Import and build the pipeline, apply source/sink overrides, validate the config."""
    cfg = settings.config
    # A worker's arrays live in shared memory, where the coordinator merges them in place.
    arrays = SharedArrays(run.run_id, run.worker) if run.role == ROLE_SHARD else None
    app = Application(cfg, run=run, arrays=arrays)
    cls = import_object(cfg, "cluster", "pipeline", settings.pipeline)
    if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
        raise cfg.error("cluster", "pipeline", f"{settings.pipeline} is not a bspump.Pipeline")
    try:
        pipeline = cls(app, settings.pipeline_id)
    except ClusterError:
        raise
    except Exception as e:
        raise _fail(settings, "cluster", "pipeline", f"creating {settings.pipeline}", e) from None
    section = f"pipeline:{settings.pipeline_id}"
    routing = settings.routing
    for key, ref, base in (("source", routing.source, Source), ("sink", routing.sink, Sink)):
        if not ref:
            continue
        piece_cls = import_object(cfg, section, key, ref)
        if not (isinstance(piece_cls, type) and issubclass(piece_cls, base)):
            raise cfg.error(section, key, f"{ref} is not a bspump.{base.__name__}")
        try:
            piece: object = piece_cls(app, pipeline)
        except ClusterError:
            raise
        except Exception as e:
            raise _fail(settings, section, key, f"creating {ref}", e) from None
        if isinstance(piece, Source):
            pipeline.Source = piece
        elif isinstance(piece, Sink):
            pipeline.Sink = piece
    if pipeline.Source is None:
        raise cfg.error("cluster", "pipeline",
                        f"{settings.pipeline} did not call self.build(source, ...)")
    pipeline.check_config()
    for piece in pipeline.pieces():
        piece.check()
    return app, pipeline
