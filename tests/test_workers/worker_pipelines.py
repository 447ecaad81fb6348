"""The pipeline the worker tests run: a window counter, sessions, a processor that can
fail, a printing analyzer, and the in-memory sink."""

import bspump
from bspump.analyzer import SessionAnalyzer, TimeWindowAnalyzer
from bspump.testing import TestingSink, TestingSource


class Counter(TimeWindowAnalyzer):
    """Counts events per type and minute."""

    def __init__(self, app, pipeline, id=None, config=None):
        super().__init__(app, pipeline, id, config, window_size=600, resolution=60)

    def evaluate(self, context, event):
        self.count(event["type"])


class Sessions(SessionAnalyzer):
    """One session per user, ended after 100 s without an event."""

    def __init__(self, app, pipeline, id=None, config=None):
        super().__init__(app, pipeline, id, config, session_timeout=100)

    def evaluate(self, context, event):
        if self.get_session(event["user"]) is None:
            self.create_session(event["user"], {})


class Fragile(bspump.Processor):
    """Raises on an event with ``boom``."""

    def process(self, context, event):
        if event.get("boom"):
            raise ValueError("boom")
        return event


class Talker(bspump.Analyzer):
    """Prints a line for an event with ``say``."""

    def evaluate(self, context, event):
        if "say" in event:
            print(f"said {event['say']}")


class WorkerPipeline(bspump.Pipeline):
    def __init__(self, app, pipeline_id):
        super().__init__(app, pipeline_id)
        self.build(TestingSource(app, self), Counter(app, self), Sessions(app, self),
                   Fragile(app, self), Talker(app, self), TestingSink(app, self))
