"""The pipeline of the scale-out test: the spec's analyzers behind a configurable brake.

The brake (a sleep per event) keeps partition tasks busy long enough for the test to
move partitions between hosts mid-stream.
"""

import time

from spec_examples import HourlyCountAnalyzer, UserSessionAnalyzer

import bspump
import bspump.common
import bspump.kafka


class Brake(bspump.Processor):
    """Sleeps ``seconds_per_event`` per event."""

    ConfigDefaults = {"seconds_per_event": 0.0}

    def process(self, context, event):
        time.sleep(float(self.Config["seconds_per_event"]))
        return event


class ScaleOutPipeline(bspump.Pipeline):
    """Kafka in; hourly counts per type and user sessions; nothing out but the results."""

    def __init__(self, app, pipeline_id):
        super().__init__(app, pipeline_id)
        self.build(
            bspump.kafka.KafkaSource(app, self, connection="KafkaConnection"),
            Brake(app, self),
            HourlyCountAnalyzer(app, self),
            UserSessionAnalyzer(app, self),
            bspump.common.NullSink(app, self),
        )
