"""Pipelines of the anomaly tests: the keyed detector a cluster should use."""

import bspump
import bspump.file
from bspump.anomaly import KeyedAnomalyDetector


class KeyedPipeline(bspump.Pipeline):
    """File in, the per-key 3-sigma detector, every event out (flagged ones marked)."""

    def __init__(self, app, pipeline_id):
        super().__init__(app, pipeline_id)
        self.build(
            bspump.file.FileJSONLinesSource(app, self),
            KeyedAnomalyDetector(app, self),
            bspump.file.FileJSONLinesSink(app, self, path="events.jsonl"),
        )
