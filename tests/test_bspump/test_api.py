"""The user API of the spec: names, signatures, config sections, and analyzers run by hand."""

from __future__ import annotations

import inspect
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bspump
import bspump.analyzer
import bspump.anomaly
import bspump.kafka
import bspump.matrix
from cluster.config import Config
from cluster.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
if str(CONFIGS) not in sys.path:
    sys.path.insert(0, str(CONFIGS))

import spec_examples  # noqa: E402  (configs/ is on sys.path only now)

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


# -- processors and analyzers --------------------------------------------------------------


class DropOdd(bspump.Processor):
    def process(self, context: dict[str, Any], event: Any) -> Any:
        return None if event["n"] % 2 else event


class Watch(bspump.Analyzer):
    def __init__(self, app: Any, pipeline: Any, id: str | None = None) -> None:
        super().__init__(app, pipeline, id)
        self.seen: list[int] = []

    def evaluate(self, context: dict[str, Any], event: Any) -> Any:
        self.seen.append(event["n"])
        return None


class Replace(bspump.Analyzer):
    def evaluate(self, context: dict[str, Any], event: Any) -> Any:
        return {**event, "replaced": True} if event["n"] == 4 else None


def test_processor_none_drops_and_analyzer_none_passes_on() -> None:
    p = pipeline_of(lambda app, pl: [Watch(app, pl, "before"), DropOdd(app, pl),
                                     Watch(app, pl, "after"), Replace(app, pl)])
    events = [{"n": i} for i in range(7)]
    p.process_batch([T0 + i for i in range(7)], events)
    before, after = p.Processors[0], p.Processors[2]
    assert isinstance(before, Watch) and isinstance(after, Watch)
    assert before.seen == [0, 1, 2, 3, 4, 5, 6]
    assert after.seen == [0, 2, 4, 6]
    assert p.sink.events == [{"n": 0}, {"n": 2}, {"n": 4, "replaced": True}, {"n": 6}]
    assert (p.events_in, p.events_out) == (7, 4)


class Boom(bspump.Analyzer):
    def evaluate(self, context: dict[str, Any], event: Any) -> Any:
        if event.get("boom"):
            raise ValueError("cannot handle " + str(event["n"]))
        return None


def test_an_exception_sends_the_event_to_dead_letters_and_goes_on() -> None:
    p = pipeline_of(lambda app, pl: [Boom(app, pl, "boomer"), Watch(app, pl, "after")])
    p.process_batch([T0, T0 + 1, T0 + 2], [{"n": 1}, {"n": 2, "boom": True}, {"n": 3}])
    after = p.Processors[1]
    assert isinstance(after, Watch)
    assert after.seen == [1, 3]
    assert [e["n"] for e in p.sink.events] == [1, 3]
    assert len(p.dead_letters) == 1
    dead = p.dead_letters[0]
    assert dead["processor"] == "boomer"
    assert dead["record"] == {"n": 2, "boom": True}
    assert dead["event_time"] == T0 + 1
    assert "ValueError: cannot handle 2" in dead["reason"]
    assert p.take_dead_letters() == [dead] and p.dead_letters == []


# -- configuration sections ----------------------------------------------------------------


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


# -- SessionAnalyzer -----------------------------------------------------------------------


def user_event(user: str, t: float) -> dict[str, Any]:
    return {"user_id": user, "timestamp": t}


def sessions_pipeline() -> tuple[ListPipeline, Any]:
    p = pipeline_of(lambda app, pl: [spec_examples.UserSessionAnalyzer(app, pl)])
    p.advance(T0)  # the runtime's first watermark: the first event time
    return p, p.Processors[0]


def ended(p: ListPipeline) -> list[Any]:
    return p.take_report().get("UserSessionAnalyzer", {}).get("ended", [])


def test_a_session_ends_exactly_when_the_gap_exceeds_the_timeout(
        capsys: pytest.CaptureFixture[str]) -> None:
    p, analyzer = sessions_pipeline()
    times = [T0, T0 + 1800.0, T0 + 3600.0, T0 + 5400.001, T0 + 5500.0]
    for t in times:  # one event per batch, as a worker may receive them
        p.process_batch([t], [user_event("a", t)])
    # Gaps: 1800 (== timeout: same session), 1800, 1800.001 (> timeout: new session), 99.999.
    assert ended(p) == [["a", T0, T0 + 3600.0, 3]]
    assert capsys.readouterr().out == "Session a ended with 3 events\n"
    assert analyzer.open_sessions == 1
    p.finish(T0 + 5500.0)
    assert ended(p) == [["a", T0 + 5400.001, T0 + 5500.0, 2]]
    assert capsys.readouterr().out == "Session a ended with 2 events\n"
    assert analyzer.open_sessions == 0


def test_the_watermark_ends_idle_sessions_after_the_timeout(
        capsys: pytest.CaptureFixture[str]) -> None:
    p, analyzer = sessions_pipeline()
    p.process_batch([T0 + 10, T0 + 20, T0 + 30],
                    [user_event("a", T0 + 10), user_event("b", T0 + 20),
                     user_event("a", T0 + 30)])
    p.advance(T0 + 30 + 1800)  # a's gap == timeout; b's gap 1810 > timeout
    assert ended(p) == [["b", T0 + 20, T0 + 20, 1]]
    p.advance(T0 + 30 + 1800 + 0.5)
    assert ended(p) == [["a", T0 + 10, T0 + 30, 2]]
    assert capsys.readouterr().out == ("Session b ended with 1 events\n"
                                       "Session a ended with 2 events\n")
    assert analyzer.open_sessions == 0
    p.finish(T0 + 30)
    assert ended(p) == []


def test_sessions_are_per_key_and_out_of_order_events_join_them() -> None:
    p, analyzer = sessions_pipeline()
    p.process_batch([T0 + 100, T0 + 50, T0 + 110, T0 + 90],
                    [user_event("a", T0 + 100), user_event("b", T0 + 50),
                     user_event("a", T0 + 110), user_event("a", T0 + 90)])
    assert analyzer.open_sessions == 2
    p.finish(T0 + 110)
    assert sorted(ended(p)) == [["a", T0 + 90, T0 + 110, 3], ["b", T0 + 50, T0 + 50, 1]]


# -- TimeWindowAnalyzer --------------------------------------------------------------------


class KeyCounter(bspump.analyzer.TimeWindowAnalyzer):
    def __init__(self, app: Any, pipeline: Any, id: str | None = None,
                 config: Any = None) -> None:
        super().__init__(app, pipeline, id, config, window_size=600, resolution=60)
        self.ticks: list[float] = []

    def evaluate(self, context: dict[str, Any], event: Any) -> Any:
        self.count(event["k"], event.get("v", 1))
        return None

    def on_tick(self, tick: float) -> None:
        self.ticks.append(tick)


def test_time_window_counts_closes_periods_and_ticks() -> None:
    p = pipeline_of(lambda app, pl: [KeyCounter(app, pl)])
    tw = p.Processors[0]
    assert isinstance(tw, KeyCounter)
    p.advance(T0)
    data = [(5, "a", 1), (30, "b", 2), (59.999, "a", 1), (60, "a", 4), (125, "b", 1),
            (130, "a", 1)]
    p.process_batch([T0 + t for t, _, _ in data], [{"k": k, "v": v} for _, k, v in data])
    p0 = int(T0 // 60)
    expected: dict[tuple[int, str], float] = {}
    for t, k, v in data:
        key = (math.floor((T0 + t) / 60), k)
        expected[key] = expected.get(key, 0) + v
    slots = 10  # window_size / resolution

    p.advance(T0 + 120)
    assert tw.ticks == [T0 + 60, T0 + 120]
    report = p.take_report()["KeyCounter"]
    assert report["keys"] == ["a", "b"]
    assert sorted(map(tuple, report["closed"])) == [(p0, p0 % slots), (p0 + 1, (p0 + 1) % slots)]
    ring = tw.window_array
    assert ring is not None
    for period, slot in report["closed"]:
        for row, key in enumerate(report["keys"]):
            assert ring[slot, row] == expected.get((period, key), 0), (period, key)

    p.advance(T0 + 130)  # inside the same period: nothing closes, no tick
    assert tw.ticks == [T0 + 60, T0 + 120]
    assert p.take_report() == {}

    p.advance(T0 + 300)  # every period end passed fires once, data or not
    assert tw.ticks == [T0 + 60, T0 + 120, T0 + 180, T0 + 240, T0 + 300]
    report = p.take_report()["KeyCounter"]
    assert report["keys"] == []
    assert [tuple(x) for x in report["closed"]] == [(p0 + 2, (p0 + 2) % slots)]
    assert ring[(p0 + 2) % slots, 0] == expected[(p0 + 2, "a")]
    assert ring[(p0 + 2) % slots, 1] == expected[(p0 + 2, "b")]

    p.finish(T0 + 130)
    assert tw.ticks == [T0 + 60, T0 + 120, T0 + 180, T0 + 240, T0 + 300]


def test_count_batch_puts_each_event_in_the_period_its_time_floors_to() -> None:
    # The batch path (count_batch) must cut periods exactly as count() does: an event at
    # 59.999 s belongs to the period starting at 0, one at 60 s to the next.
    p = pipeline_of(lambda app, pl: [KeyCounter(app, pl)])
    tw = p.Processors[0]
    assert isinstance(tw, KeyCounter)
    p.advance(T0)
    data = [(0.2, "a", 1.0), (29.6, "b", 2.0), (59.999, "a", 3.0), (60.0, "a", 4.0),
            (89.7, "b", 5.0), (119.5, "a", 6.0)]
    tw.count_batch(np.array([k for _, k, _ in data], dtype=object),
                   np.array([T0 + t for t, _, _ in data]),
                   values=np.array([v for _, _, v in data]))
    expected: dict[tuple[int, str], float] = {}
    for t, k, v in data:
        key = (math.floor((T0 + t) / 60), k)
        expected[key] = expected.get(key, 0) + v
    p.advance(T0 + 120)
    report = p.take_report()["KeyCounter"]
    ring = tw.window_array
    assert ring is not None
    p0 = int(T0 // 60)
    assert sorted(period for period, _ in report["closed"]) == [p0, p0 + 1]
    for period, slot in report["closed"]:
        for row, key in enumerate(report["keys"]):
            assert ring[slot, row] == expected.get((period, key), 0), (period, key)


def test_finish_closes_the_last_period_and_ticks_for_it() -> None:
    p = pipeline_of(lambda app, pl: [KeyCounter(app, pl)])
    tw = p.Processors[0]
    assert isinstance(tw, KeyCounter)
    p.advance(T0 + 10)
    p.process_batch([T0 + 10, T0 + 70], [{"k": "x"}, {"k": "x"}])
    p.finish(T0 + 70)
    assert tw.ticks == [T0 + 60, T0 + 120]
    closed = p.take_report()["KeyCounter"]["closed"]
    assert sorted(period for period, _ in closed) == [int(T0 // 60), int(T0 // 60) + 1]


def test_spec_hourly_count_analyzer_prints_each_tick(
        capsys: pytest.CaptureFixture[str]) -> None:
    p = pipeline_of(lambda app, pl: [spec_examples.HourlyCountAnalyzer(app, pl)])
    p.advance(T0)
    p.process_batch([T0 + 1, T0 + 2, T0 + 3],
                    [{"type": "click"}, {"type": "view"}, {"type": "click"}])
    p.advance(T0 + 60)
    assert capsys.readouterr().out == "click: 2 events\nview: 1 events\n"
    p.process_batch([T0 + 61], [{"type": "buy"}])
    p.advance(T0 + 120)
    assert capsys.readouterr().out == "buy: 1 events\n"


# -- the spec's anomaly detector and matrices --------------------------------------------------


def test_rate_anomaly_detector_flags_a_spike() -> None:
    p = pipeline_of(lambda app, pl: [spec_examples.RateAnomalyDetector(app, pl)])
    values = [100.0 + (1 if i % 2 else -1) for i in range(150)] + [130.0] + [100.0, 99.0]
    p.process_batch([T0 + i for i in range(len(values))], [{"value": v} for v in values])
    flagged = [i for i, e in enumerate(p.sink.events) if e.get("anomaly")]
    assert flagged == [150]
    window = np.array(values[51:151])  # the last 100 values, the spike included
    score = abs(130.0 - window.mean()) / window.std()
    assert score > 3
    assert p.sink.events[150]["anomaly_score"] == pytest.approx(score, rel=1e-9)
    assert "anomaly" not in p.sink.events[149]


def test_matrix_indexing() -> None:
    app = bspump.Application()
    m = bspump.matrix.Matrix(app, "M", (3, 4))
    m[1, 2] += 1
    m[1, 2] += 1
    m[0, 3] += 5
    m[2] = 7
    expected = np.zeros((3, 4))
    expected[1, 2], expected[0, 3], expected[2, :] = 2, 5, 7
    np.testing.assert_array_equal(m.array, expected)
    assert m[1, 2] == 2
    assert m.shape == (3, 4) and len(m) == 3 and m.dtype == np.float64
    assert app.Matrices["M"] is m
    with pytest.raises(ConfigError, match="'M'"):
        bspump.matrix.Matrix(app, "M", (1,))


def test_spec_geo_analyzer_fills_its_matrix() -> None:
    p = pipeline_of(lambda app, pl: [spec_examples.GeoAnalyzer(app, pl)])
    points = [(48.85, -2.35), (48.1, -2.9), (-33.87, -151.21), (0.0, 0.0)]
    p.process_batch([T0] * len(points), [{"latitude": la, "longitude": lo}
                                         for la, lo in points])
    expected = np.zeros((360, 180))
    expected[138, 177] = 2
    expected[56, 28] = 1
    # Longitude 0 is column 180, outside the spec's 180 columns: a dead letter, not a crash.
    np.testing.assert_array_equal(p.App.Matrices["GeoMatrix"].array, expected)
    assert len(p.dead_letters) == 1 and "IndexError" in p.dead_letters[0]["reason"]


def test_persistent_matrix_loads_the_configured_npy(tmp_path: Path) -> None:
    saved = np.zeros((1000, 1000))
    saved[3, 4] = 12.5
    saved[999, 0] = -1
    path = tmp_path / "matrix.npy"
    np.save(path, saved)
    cfg = Config.from_string(f"[matrix:PersistentMatrix]\npath = {path}\n")
    app = bspump.Application(cfg)
    pipeline = bspump.Pipeline(app, "P")
    analyzer = spec_examples.PersistentAnalyzer(app, pipeline)
    assert analyzer.matrix.path == path  # the config beats path="/data/matrix.dat"
    np.testing.assert_array_equal(analyzer.matrix.array, saved)


def test_persistent_matrix_refuses_a_wrong_shape_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "small.npy"
    np.save(path, np.ones((2, 2)))
    app = bspump.Application(Config.from_string(f"[matrix:PM]\npath = {path}\n"))
    with pytest.raises(ConfigError, match="shape"):
        bspump.matrix.PersistentMatrix(app, "PM", shape=(3, 3))
    app = bspump.Application(Config.from_string(f"[matrix:PM]\npath = {path}\nsize = 3\n"))
    with pytest.raises(ConfigError, match=r"\[matrix:PM\] size"):
        bspump.matrix.PersistentMatrix(app, "PM", shape=(2, 2))
