"""The spec's names and signatures: every name exists, takes the spec's calls, builds."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import pytest

import bspump
import bspump.analyzer
import bspump.anomaly
import bspump.kafka
import bspump.matrix
from cluster.config import Config
from tests.test_bspump.api_helpers import (
    SPEC_PIPELINES_CONF,
    spec_examples,
)


def test_every_name_of_the_spec_exists() -> None:
    assert bspump.Application and bspump.Pipeline and bspump.Processor and bspump.Analyzer
    assert issubclass(bspump.Analyzer, bspump.Processor)
    assert issubclass(bspump.analyzer.TimeWindowAnalyzer, bspump.Analyzer)
    assert issubclass(bspump.analyzer.SessionAnalyzer, bspump.Analyzer)
    assert issubclass(bspump.matrix.PersistentMatrix, bspump.matrix.Matrix)
    assert inspect.isclass(bspump.anomaly.Anomaly)
    assert issubclass(bspump.kafka.KafkaSource, bspump.Source)
    assert issubclass(bspump.kafka.KafkaSink, bspump.Sink)
    assert bspump.kafka is sys.modules["bspump.kafka"]
    for name in ("evaluate", "process"):
        assert callable(getattr(bspump.Analyzer, name))
    assert callable(bspump.analyzer.TimeWindowAnalyzer.on_tick)
    for name in ("get_session", "create_session", "on_session_end"):
        assert callable(getattr(bspump.analyzer.SessionAnalyzer, name))


APP, PIPE = object(), object()

# Each call exactly as the spec's examples write it.
SPEC_CALLS: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
    (bspump.Pipeline.__init__, (PIPE, APP, "AnalysisPipeline"), {}),
    (bspump.Pipeline.build, (PIPE, 1, 2, 3, 4, 5), {}),
    (bspump.Analyzer.__init__, (PIPE, APP, PIPE, None, None), {}),
    (bspump.Processor.__init__, (PIPE, APP, PIPE, None, None), {}),
    (bspump.Analyzer.evaluate, (PIPE, {}, {}), {}),
    (bspump.analyzer.TimeWindowAnalyzer.__init__, (PIPE, APP, PIPE, None, None),
     {"window_size": 3600, "resolution": 60}),
    (bspump.analyzer.TimeWindowAnalyzer.on_tick, (PIPE, 60.0), {}),
    (bspump.analyzer.SessionAnalyzer.__init__, (PIPE, APP, PIPE, None, None),
     {"session_timeout": 1800}),
    (bspump.analyzer.SessionAnalyzer.get_session, (PIPE, "u1"), {}),
    (bspump.analyzer.SessionAnalyzer.create_session, (PIPE, "u1", {}), {}),
    (bspump.analyzer.SessionAnalyzer.on_session_end, (PIPE, "u1", {}), {}),
    (bspump.matrix.Matrix.__init__, (PIPE, APP, "GeoMatrix", (360, 180)), {}),
    (bspump.matrix.PersistentMatrix.__init__, (PIPE, APP, "PersistentMatrix"),
     {"path": "/data/matrix.dat", "shape": (1000, 1000)}),
    (bspump.kafka.KafkaSource.__init__, (PIPE, APP, PIPE), {"connection": "KafkaConnection"}),
    (bspump.kafka.KafkaSink.__init__, (PIPE, APP, PIPE), {"connection": "KafkaConnection"}),
]


@pytest.mark.parametrize(("func", "args", "kwargs"), SPEC_CALLS,
                         ids=[c[0].__qualname__ for c in SPEC_CALLS])
def test_signatures_take_the_spec_calls(func: Any, args: tuple[Any, ...],
                                        kwargs: dict[str, Any]) -> None:
    inspect.signature(func).bind(*args, **kwargs)


def test_processor_and_analyzer_parameter_names() -> None:
    for cls in (bspump.Processor, bspump.Analyzer, bspump.analyzer.TimeWindowAnalyzer,
                bspump.analyzer.SessionAnalyzer):
        params = list(inspect.signature(cls.__init__).parameters)
        assert params[:5] == ["self", "app", "pipeline", "id", "config"], cls
        assert inspect.signature(cls.__init__).parameters["id"].default is None
        assert inspect.signature(cls.__init__).parameters["config"].default is None


def test_the_spec_aggregation_pipeline_builds() -> None:
    app = bspump.Application(Config.from_string(SPEC_PIPELINES_CONF))
    p = spec_examples.AggregationPipeline(app, "AnalysisPipeline")
    assert app.get_pipeline("AnalysisPipeline") is p
    assert isinstance(p.Source, bspump.kafka.KafkaSource)
    assert isinstance(p.Sink, bspump.kafka.KafkaSink)
    assert [type(x).__name__ for x in p.Processors] == [
        "HourlyCountAnalyzer", "UserSessionAnalyzer", "RateAnomalyDetector"]
    p.check_config()  # both spec sections name a piece of this pipeline
    anomaly = bspump.anomaly.Anomaly(key="u1", value=5.0, score=4.2)
    assert anomaly.as_dict()["score"] == 4.2


