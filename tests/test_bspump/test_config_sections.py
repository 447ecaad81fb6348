"""Config sections of processors: the spec's pipelines.conf, the most specific section
wins, refusals name file, section and key."""

from __future__ import annotations

from typing import Any

import pytest

import bspump
import bspump.analyzer
import bspump.anomaly
import bspump.kafka
import bspump.matrix
from cluster.config import Config
from cluster.errors import ConfigError
from tests.test_bspump.api_helpers import (
    SPEC_PIPELINES_CONF,
    spec_examples,
)


class AnalysisPipeline(bspump.Pipeline):
    """The spec's HourlyCountAnalyzer and UserSessionAnalyzer, under chosen ids."""

    def __init__(self, app: Any, pipeline_id: str, hourly_id: str | None = None) -> None:
        super().__init__(app, pipeline_id)
        self.hourly = spec_examples.HourlyCountAnalyzer(app, self, hourly_id)
        self.sessions = spec_examples.UserSessionAnalyzer(app, self)
        self.build(bspump.Source(app, self), self.hourly, self.sessions)


def analysis(site: str = "", hourly_id: str | None = None,
             first: str = SPEC_PIPELINES_CONF) -> AnalysisPipeline:
    """pipelines.conf (the spec's text) read first, then the site's config."""
    cfg = Config.from_string(first, "pipelines.conf")
    cfg.read_string(site, "site.conf")
    app = bspump.Application(cfg)
    p = AnalysisPipeline(app, "AnalysisPipeline", hourly_id)
    p.check_config()
    return p


def test_the_spec_pipelines_conf_applies() -> None:
    p = analysis()
    assert (p.hourly.window_size, p.hourly.resolution) == (3600.0, 60.0)
    assert p.sessions.session_timeout == 1800.0


@pytest.mark.parametrize(("site", "hourly_id", "window", "resolution"), [
    # The base class's section overrides the constructor arguments (3600, 60).
    ("[pipeline:AnalysisPipeline:TimeWindowAnalyzer]\nwindow_size=7200\nresolution=120\n",
     None, 7200.0, 120.0),
    # The class's own section beats the base class's.
    ("[pipeline:AnalysisPipeline:TimeWindowAnalyzer]\nwindow_size=7200\nresolution=120\n"
     "[pipeline:AnalysisPipeline:HourlyCountAnalyzer]\nresolution=30\n",
     None, 7200.0, 30.0),
    # The id's section beats both.
    ("[pipeline:AnalysisPipeline:TimeWindowAnalyzer]\nwindow_size=7200\nresolution=120\n"
     "[pipeline:AnalysisPipeline:HourlyCountAnalyzer]\nresolution=30\n"
     "[pipeline:AnalysisPipeline:hourly]\nresolution=15\n",
     "hourly", 7200.0, 15.0),
    # Sections of another pipeline id do not apply.
    ("[pipeline:Other:TimeWindowAnalyzer]\nresolution=5\n", None, 3600.0, 60.0),
])
def test_most_specific_section_wins(site: str, hourly_id: str | None, window: float,
                                    resolution: float) -> None:
    p = analysis(site, hourly_id)
    assert (p.hourly.window_size, p.hourly.resolution) == (window, resolution)


def test_specificity_not_file_order_decides() -> None:
    # The id section is in pipelines.conf (read first); the base class section is in the
    # site config (read last): the id still wins.
    first = SPEC_PIPELINES_CONF + "\n[pipeline:AnalysisPipeline:hourly]\nresolution=20\n"
    site = "[pipeline:AnalysisPipeline:TimeWindowAnalyzer]\nresolution=90\n"
    p = analysis(site, "hourly", first=first)
    assert p.hourly.resolution == 20.0
    assert p.hourly.window_size == 3600.0


def test_site_config_overrides_pipelines_conf_for_sessions() -> None:
    p = analysis("[pipeline:AnalysisPipeline:SessionAnalyzer]\nsession_timeout=600\n")
    assert p.sessions.session_timeout == 600.0
    p = analysis("[pipeline:AnalysisPipeline:UserSessionAnalyzer]\nsession_timeout=60\n")
    assert p.sessions.session_timeout == 60.0


def test_unknown_key_names_the_section() -> None:
    with pytest.raises(ConfigError) as info:
        analysis("[pipeline:AnalysisPipeline:HourlyCountAnalyzer]\nwindow=10\n")
    message = str(info.value)
    assert "site.conf [pipeline:AnalysisPipeline:HourlyCountAnalyzer] window" in message
    assert "unknown key" in message
    with pytest.raises(ConfigError, match=r"\[pipeline:AnalysisPipeline:SessionAnalyzer\] "
                                          r"timeout"):
        analysis("[pipeline:AnalysisPipeline:SessionAnalyzer]\ntimeout=10\n")


def test_bad_value_names_the_section_and_key() -> None:
    with pytest.raises(ConfigError, match=r"site.conf \[pipeline:AnalysisPipeline:"
                                          r"TimeWindowAnalyzer\] resolution"):
        analysis("[pipeline:AnalysisPipeline:TimeWindowAnalyzer]\nresolution=fast\n")
    with pytest.raises(ConfigError, match=r"\[pipeline:AnalysisPipeline:hourly\] resolution"):
        analysis("[pipeline:AnalysisPipeline:hourly]\nresolution=0\n", "hourly")


def test_a_section_naming_no_processor_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        analysis("[pipeline:AnalysisPipeline:HourlyCounter]\nresolution=10\n")
    message = str(info.value)
    assert "[pipeline:AnalysisPipeline:HourlyCounter]" in message
    assert "site.conf" in message
    assert "HourlyCountAnalyzer" in message  # the known names are listed


