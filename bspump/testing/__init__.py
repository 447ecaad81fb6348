"""Test a pipeline: an in-memory source and sink, and :func:`run_pipeline`.

``run_pipeline`` runs a pipeline over a list of events and hands back what the run
produced: merged window rows, ended sessions, anomalies, matrices, the events that
reached the sink, dead letters and late events. ``workers=0`` runs it here, in this
process, with BSPump's own :class:`~bspump.Application` and no cluster runtime;
``workers=N`` runs the real cluster (a coordinator and N worker processes, ZeroMQ,
shared memory) as ``python -m cluster run`` and reads its output folder back, so a
test can check that an analyzer gives the same results on every topology::

    from bspump.testing import run_pipeline

    result = run_pipeline(MyPipeline, events, shard_key="user_id", time_field="ts",
                          workers=3)
    assert result.window_counts("MyCounter") == {(0, 60, "click"): 2, ...}

This module imports only ``bspump``: the cluster is started as a process by module
name, never imported.
"""


from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bspump import Pipeline
from bspump.testing.local import run_here
from bspump.testing.pieces import TestingSink, TestingSource
from bspump.testing.processes import FILE_SOURCE, import_root, run_cluster, write_config
from bspump.testing.result import PipelineResult, RunFailed

__all__ = ["PipelineResult", "RunFailed", "TestingSink", "TestingSource", "run_pipeline"]

RUN_TIMEOUT = 300.0


def _sections(pipeline_id: str, processors: Mapping[str, Mapping[str, Any]] | None,
              ini: str) -> str:
    text = ""
    for name, keys in (processors or {}).items():
        text += f"\n[pipeline:{pipeline_id}:{name}]\n" + "".join(
            f"{k} = {v}\n" for k, v in keys.items())
    return text + ("\n" + ini if ini else "")


def run_pipeline(pipeline: type[Pipeline] | str, events: Iterable[Any] | None = None, *,
                 shard_key: str, time_field: str | None = None,
                 allowed_lateness: float = 0.0, max_time_jump: float = 3600.0,
                 time_jump_confirm: int = 100, workers: int = 0,
                 processors: Mapping[str, Mapping[str, Any]] | None = None, ini: str = "",
                 cluster: Mapping[str, Any] | None = None, pipeline_id: str | None = None,
                 python_path: Sequence[str | os.PathLike[str]] = (), replace_sink: bool = True,
                 output_dir: str | os.PathLike[str] | None = None,
                 timeout: float = RUN_TIMEOUT) -> PipelineResult:
    """Run ``pipeline`` over ``events`` to the end and return what it produced.

    ``pipeline`` is a Pipeline subclass defined at the top level of a module, or
    ``"module:Class"`` importable from ``python_path``. ``events`` (dicts) replace the
    pipeline's source (a ``FileJSONLinesSource`` reads them, as JSON lines, on every
    topology); None keeps its own (a finite one: :class:`TestingSource` built into
    the pipeline, the generator with a count...). Unless ``replace_sink`` is False the
    sink is replaced too, by one that keeps the events (``result.sink``).

    ``shard_key``, ``time_field``, ``allowed_lateness``, ``max_time_jump`` and
    ``time_jump_confirm`` are the ``[pipeline:ID]`` keys of a config; ``processors`` maps
    a processor's id or class name to its keys
    (``{"HourlyCountAnalyzer": {"count_field": "type"}}``); ``ini`` is more config
    text (``[matrix:ID]`` sections...); ``cluster`` sets ``[cluster]`` keys of a
    cluster run (``batch_size``, ``key_groups``...).

    ``workers=0`` runs the pipeline in this process, with no cluster runtime;
    ``workers >= 1`` starts the cluster with that many worker processes and raises
    :class:`RunFailed` unless it exits 0. The config, the input and (on a cluster)
    the output folder land in ``output_dir`` when given, else in a temporary folder
    removed afterwards.
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 (in this process) or more, got {workers}")
    event_list = None if events is None else list(events)
    if isinstance(pipeline, str):
        module, _, name = pipeline.partition(":")
        if not module or not name:
            raise ValueError(f"pipeline {pipeline!r}: expected 'module:Class'")
        roots = [Path(p).resolve() for p in python_path]
        cls: type[Pipeline] | None = None
        ref = pipeline
    else:
        ref, root = import_root(pipeline) if workers else (pipeline.__qualname__, None)
        roots = [*(Path(p).resolve() for p in python_path), *([root] if root else [])]
        cls, name = pipeline, pipeline.__name__
    pid = pipeline_id or name
    sections = _sections(pid, processors, ini)
    routing = {"shard_key": shard_key, "time_field": time_field,
               "allowed_lateness": allowed_lateness, "max_time_jump": max_time_jump,
               "time_jump_confirm": time_jump_confirm,
               "source": None if event_list is None else FILE_SOURCE}
    with contextlib.ExitStack() as stack:
        if output_dir is not None:
            folder = Path(output_dir)
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bspump-test-")))
        config = write_config(folder, ref, roots, pid, event_list, sections, routing,
                              dict(cluster or {}), replace_sink and workers > 0)
        if workers:
            result = run_cluster(config, pid, workers, timeout)
            if output_dir is None:
                result.output_dir = None  # removed on the way out
            return result
        if cls is None:
            cls = _import(module, name, roots)
        return run_here(cls, pid, config, routing, replace_sink)


def _import(module: str, name: str, roots: list[Path]) -> type[Pipeline]:
    """Import ``module:name`` with ``roots`` searched first (only for this import)."""
    saved = list(sys.path)
    sys.path[:0] = [str(r) for r in roots]
    try:
        obj = getattr(importlib.import_module(module), name)
    finally:
        sys.path[:] = saved
    if not (isinstance(obj, type) and issubclass(obj, Pipeline)):
        raise ValueError(f"{module}:{name} is not a bspump.Pipeline")
    return obj
