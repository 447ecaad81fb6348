"""BSPump's analyzer API, run sharded over every core by bspump-cluster.

``import bspump`` gives the names of the BSPump analyzer documentation:
``Application``, ``Pipeline``, ``Processor``, ``Analyzer``, and the submodules
``analyzer``, ``matrix``, ``anomaly``, ``kafka``, ``file``, ``common`` and ``generator``.
"""

from bspump import analyzer, anomaly, common, file, generator, kafka, matrix
from bspump.application import Application, RunInfo
from bspump.pipeline import Pipeline
from bspump.processor import Analyzer, Processor, Sink, Source, SourceBatch

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
