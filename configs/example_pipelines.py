"""Pipelines that put the documentation's analyzers to work (the analyzers are unchanged).

``GeoPipeline`` shards by geo cell and fills the spec's GeoMatrix. ``SeedPipeline``
runs every analyzer of the documentation on one stream, with the built-in counter
of ``TimeWindowAnalyzer`` (``count_field``) writing merged window rows.
"""

import numpy as np
from spec_examples import (
    GeoAnalyzer,
    HourlyCountAnalyzer,
    PersistentAnalyzer,
    RateAnomalyDetector,
    UserSessionAnalyzer,
)

import bspump
import bspump.common
import bspump.generator
from bspump.analyzer import TimeWindowAnalyzer
from bspump.matrix import Matrix


class GeoPipeline(bspump.Pipeline):
    """Generated events -> the spec's GeoAnalyzer -> nowhere; the matrix is the result."""

    def __init__(self, app, pipeline_id):
        super().__init__(app, pipeline_id)
        self.build(
            bspump.generator.GeneratorSource(app, self),
            GeoAnalyzer(app, self),
            bspump.common.NullSink(app, self),
        )


class SeedPipeline(bspump.Pipeline):
    """Every analyzer of the documentation on one generated stream."""

    def __init__(self, app, pipeline_id):
        super().__init__(app, pipeline_id)
        self.build(
            bspump.generator.GeneratorSource(app, self),
            HourlyCountAnalyzer(app, self),
            UserSessionAnalyzer(app, self),
            GeoAnalyzer(app, self),
            RateAnomalyDetector(app, self),
            PersistentAnalyzer(app, self),
            bspump.common.NullSink(app, self),
        )


class BenchPipeline(bspump.Pipeline):
    """The benchmark: the spec's HourlyCountAnalyzer and UserSessionAnalyzer, nothing else."""

    def __init__(self, app, pipeline_id):
        super().__init__(app, pipeline_id)
        self.build(
            bspump.generator.GeneratorSource(app, self),
            HourlyCountAnalyzer(app, self),
            UserSessionAnalyzer(app, self),
            bspump.common.NullSink(app, self),
        )


class UserTotalsAnalyzer(bspump.Analyzer):
    """Events and value sum per user in a Matrix (users x 2), per event or per batch."""

    ConfigDefaults = {"users": 10000}

    def __init__(self, app, pipeline, id=None, config=None):
        super().__init__(app, pipeline, id, config)
        self.totals = Matrix(app, "UserTotals", (int(self.Config["users"]), 2))

    def evaluate(self, context, event):
        row = int(event["user_id"][1:])
        self.totals[row, 0] += 1
        self.totals[row, 1] += event["value"]

    def evaluate_batch(self, batch):
        if batch.is_categorical("user_id"):
            rows = batch["user_id"]
        else:
            rows = np.array([int(u[1:]) for u in batch.values("user_id")], dtype=np.int64)
        n = self.totals.shape[0]
        self.totals.Array[:, 0] += np.bincount(rows, minlength=n)
        self.totals.Array[:, 1] += np.bincount(rows, weights=batch["value"], minlength=n)


class CountersPipeline(bspump.Pipeline):
    """The built-in counters on a columnar stream: no per-event Python at all."""

    def __init__(self, app, pipeline_id):
        super().__init__(app, pipeline_id)
        self.build(
            bspump.generator.GeneratorSource(app, self),
            TimeWindowAnalyzer(app, self, window_size=3600, resolution=60),
            UserTotalsAnalyzer(app, self),
            bspump.common.NullSink(app, self),
        )
