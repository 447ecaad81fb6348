"""BSPump's analyzer API, run sharded over every core by bspump-cluster.

``import bspump`` gives the names of the BSPump analyzer documentation:
``Application``, ``Pipeline``, ``Processor``, ``Analyzer``, and the submodules
``analyzer``, ``matrix``, ``anomaly``, ``kafka``, ``file``, ``common`` and ``generator``.

Each is imported on first use: the runtime's own modules import
:mod:`bspump.errors` and :mod:`bspump.config`, and a process that needs only those
(the supervisor, ``bspump-cluster status``) does not pay for loading every source
and sink.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bspump import analyzer, anomaly, common, file, generator, kafka, matrix
    from bspump.application import Application, RunInfo
    from bspump.pipeline import Pipeline
    from bspump.processor import Analyzer, Processor, Sink, Source, SourceBatch

_SUBMODULES = {"analyzer", "anomaly", "common", "file", "generator", "kafka", "matrix"}
_DEFINED_IN = {
    "Analyzer": "bspump.processor",
    "Application": "bspump.application",
    "Pipeline": "bspump.pipeline",
    "Processor": "bspump.processor",
    "RunInfo": "bspump.application",
    "Sink": "bspump.processor",
    "Source": "bspump.processor",
    "SourceBatch": "bspump.processor",
}

__all__ = [
    "Analyzer",
    "Application",
    "Pipeline",
    "Processor",
    "RunInfo",
    "Sink",
    "Source",
    "SourceBatch",
    "analyzer",
    "anomaly",
    "common",
    "file",
    "generator",
    "kafka",
    "matrix",
]


def __getattr__(name: str) -> Any:
    """Import a submodule or a documented name when it is first used."""
    if name in _SUBMODULES:
        return importlib.import_module(f"bspump.{name}")
    module = _DEFINED_IN.get(name)
    if module is None:
        raise AttributeError(f"module 'bspump' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later uses find it without this call
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
