"""A pipeline built with bspump.testing's in-memory source and sink (tests/test_bspump)."""

import bspump
from bspump.analyzer import TimeWindowAnalyzer
from bspump.testing import TestingSink, TestingSource

T0 = 1767225600

EVENTS = [{"user": u, "kind": k, "t": T0 + s} for u, k, s in [
    ("a", "x", 1), ("b", "x", 2), ("c", "y", 59), ("a", "y", 61), ("b", "x", 119), ("c", "x", 200),
]]


class KindCounter(TimeWindowAnalyzer):
    """Counts events by kind per minute with the user-facing ``count``."""

    def __init__(self, app, pipeline, id=None, config=None):
        super().__init__(app, pipeline, id, config, window_size=600, resolution=60)

    def evaluate(self, context, event):
        self.count(event["kind"])


class InMemoryPipeline(bspump.Pipeline):
    """Events from a list in the code, counted, kept by the sink."""

    def __init__(self, app, pipeline_id):
        super().__init__(app, pipeline_id)
        self.build(TestingSource(app, self, EVENTS), KindCounter(app, self), TestingSink(app, self))
