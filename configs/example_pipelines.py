"""Pipelines that put the documentation's analyzers to work (the analyzers are unchanged).

``GeoPipeline`` shards by geo cell and fills the spec's GeoMatrix. ``SeedPipeline``
runs every analyzer of the documentation on one stream, with the built-in counter
of ``TimeWindowAnalyzer`` (``count_field``) writing merged window rows.
"""

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
