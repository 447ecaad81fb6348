"""The spec's RateAnomalyDetector and GeoAnalyzer run by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_bspump.api_helpers import (
    T0,
    pipeline_of,
    spec_examples,
)


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
