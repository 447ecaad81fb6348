"""The pipeline the recovery tests run: the spec's analyzers plus a PersistentMatrix."""

from spec_examples import (
    GeoAnalyzer,
    HourlyCountAnalyzer,
    RateAnomalyDetector,
    UserSessionAnalyzer,
)

import bspump
import bspump.file
from bspump.matrix import PersistentMatrix

HIT_BUCKETS = 64


class UserHitsAnalyzer(bspump.Analyzer):
    """Counts events per user bucket in a PersistentMatrix."""

    def __init__(self, app, pipeline, id=None, config=None):
        super().__init__(app, pipeline, id, config)
        self.hits = PersistentMatrix(app, "UserHits", path="UserHits.npy", shape=(HIT_BUCKETS,))

    def evaluate(self, context, event):
        self.hits[int(event["user_id"][1:]) % HIT_BUCKETS] += 1


class RecoveryPipeline(bspump.Pipeline):
    """File in, every kind of state, file out."""

    def __init__(self, app, pipeline_id):
        super().__init__(app, pipeline_id)
        self.build(
            bspump.file.FileJSONLinesSource(app, self),
            HourlyCountAnalyzer(app, self),
            UserSessionAnalyzer(app, self),
            UserHitsAnalyzer(app, self),
            GeoAnalyzer(app, self),
            RateAnomalyDetector(app, self),
            bspump.file.FileJSONLinesSink(app, self, path="events.jsonl"),
        )
