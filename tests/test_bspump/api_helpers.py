"""What the tests of the user API share: the spec's examples, a list pipeline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import bspump
from cluster.config import Config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
if str(CONFIGS) not in sys.path:
    sys.path.insert(0, str(CONFIGS))

import spec_examples  # noqa: E402  (configs/ is on sys.path only now)

__all__ = ["LOCAL", "SPEC_PIPELINES_CONF", "T0", "Collect", "ListPipeline", "pipeline_of",
           "spec_examples"]

T0 = 1767225600.0  # 2026-01-01T00:00:00Z, a multiple of 60
LOCAL = bspump.RunInfo(role="local", run_id="test")

# The documentation's pipelines.conf example, as written.
SPEC_PIPELINES_CONF = """\
[pipeline:AnalysisPipeline:TimeWindowAnalyzer]
window_size=3600
resolution=60

[pipeline:AnalysisPipeline:SessionAnalyzer]
session_timeout=1800
"""


class Collect(bspump.Sink):
    """Keeps what reaches the end of the pipeline."""

    def __init__(self, app: Any, pipeline: Any, id: str | None = None) -> None:
        super().__init__(app, pipeline, id)
        self.events: list[Any] = []

    def write(self, context: dict[str, Any], event: Any) -> None:
        self.events.append(event)


class ListPipeline(bspump.Pipeline):
    """A source that is never read, the given processors, and a collecting sink."""

    def __init__(self, app: Any, pipeline_id: str, make: Any) -> None:
        super().__init__(app, pipeline_id)
        self.sink = Collect(app, self)
        self.build(bspump.Source(app, self), *make(app, self), self.sink)


def pipeline_of(make: Any, config: Config | None = None, pipeline_id: str = "P",
                start: bool = True) -> ListPipeline:
    app = bspump.Application(config or Config.from_string(""))
    p = ListPipeline(app, pipeline_id, make)
    if start:
        p.start(LOCAL)
    return p


# -- names and signatures ------------------------------------------------------------------
