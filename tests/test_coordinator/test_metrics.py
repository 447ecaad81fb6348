"""``coordinator.metrics.render`` read back by Prometheus's own parser."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import parser

from coordinator import metrics

P = "bspump_cluster_"


def snapshot(**changes: Any) -> dict[str, Any]:
    """A snapshot as ``Coordinator.snapshot()`` returns it, with figures picked to be told apart."""
    snap: dict[str, Any] = {
        "pipeline": 'Seed"Pipe\\line',  # a quote and a backslash, to check escaping
        "run_id": "4242.abcd",
        "state": "running",
        "time": 1767225700.0,
        "uptime_s": 12.5,
        "event_time": True,
        "records_read": 123456,
        "events_per_s": 4321.5,
        "workers": [
            {"worker": 0, "events_in": 60000, "events_out": 59000, "events_per_s": 2100.25,
             "queue_depth": 1000, "open_sessions": 140, "key_groups": [0, 31]},
            {"worker": 1, "events_in": 63456, "events_out": 63400, "events_per_s": 2200.75,
             "queue_depth": 56, "open_sessions": 160, "key_groups": [32, 63]},
        ],
        "watermark": 1767225600.5,
        "watermark_lag_s": 99.5,
        "dead_letters": 7,
        "late_events": 3,
        "window_rows": 80,
        "sessions_ended": 11,
        "restarts": 2,
        "kafka_lag": {"events:0": 5, "events:1": 0, "my:topic:2": 12},
        "checkpoint": {"taken": 4, "last_id": 9, "age_s": 1.25, "duration_s": 0.218,
                       "stall_s": 0.25, "worker_write_s": 0.19, "bytes": 2_000_000,
                       "state_bytes": 2_000_000, "enabled": True},
        "checkpoints": [],
        "history": [],
        "windows": {},
        "matrices": [],
    }
    snap.update(changes)
    return snap


def families(text: str) -> dict[str, Any]:
    """Metric families by the name the parser gives them (counters lose ``_total``)."""
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def value(fams: dict[str, Any], family: str, **labels: str) -> float:
    """The one sample of ``family`` whose labels include ``labels``."""
    found = [s for s in fams[family].samples
             if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family, labels, fams[family].samples)
    return float(found[0].value)


def test_every_figure_is_parsed_with_its_type_labels_and_value() -> None:
    snap = snapshot()
    fams = families(metrics.render(snap))
    pipeline = snap["pipeline"]
    expected_types = {
        "info": "gauge", "workers": "gauge",
        "events_in": "counter", "events_per_second": "gauge",
        "worker_events_in": "counter", "worker_events_out": "counter",
        "worker_events_per_second": "gauge", "worker_queue_depth": "gauge",
        "worker_open_sessions": "gauge", "worker_key_groups": "gauge",
        "watermark_seconds": "gauge", "watermark_lag_seconds": "gauge",
        "dead_letters": "counter", "late_events": "counter", "window_rows": "counter",
        "sessions_ended": "counter", "checkpoints": "counter",
        "last_checkpoint_id": "gauge", "last_checkpoint_age_seconds": "gauge",
        "last_checkpoint_duration_seconds": "gauge", "worker_restarts": "counter",
        "last_checkpoint_stall_seconds": "gauge", "last_checkpoint_bytes": "gauge",
        "last_checkpoint_worker_write_seconds": "gauge", "state_bytes": "gauge",
        "kafka_consumer_lag": "gauge", "uptime_seconds": "gauge",
    }
    assert {name: f.type for name, f in fams.items()} == {P + k: v for k, v in
                                                          expected_types.items()}
    for name, fam in fams.items():
        assert fam.documentation, f"{name} has no HELP"
        for s in fam.samples:
            assert s.labels["pipeline"] == pipeline  # escaped and read back intact
            if fam.type == "counter":
                assert s.name == name + "_total"

    assert value(fams, P + "events_in") == 123456
    assert value(fams, P + "events_per_second") == 4321.5
    for w in snap["workers"]:
        k = str(w["worker"])
        assert value(fams, P + "worker_events_in", worker=k) == w["events_in"]
        assert value(fams, P + "worker_events_out", worker=k) == w["events_out"]
        assert value(fams, P + "worker_events_per_second", worker=k) == w["events_per_s"]
        assert value(fams, P + "worker_queue_depth", worker=k) == w["queue_depth"]
        assert value(fams, P + "worker_open_sessions", worker=k) == w["open_sessions"]
        assert value(fams, P + "worker_key_groups", worker=k) == 32
    assert len(fams[P + "worker_events_out"].samples) == 2
    assert value(fams, P + "workers") == 2
    assert value(fams, P + "info", run_id="4242.abcd", state="running") == 1
    assert value(fams, P + "watermark_seconds") == 1767225600.5
    assert value(fams, P + "watermark_lag_seconds") == 99.5
    assert value(fams, P + "dead_letters") == 7
    assert value(fams, P + "late_events") == 3
    assert value(fams, P + "window_rows") == 80
    assert value(fams, P + "sessions_ended") == 11
    assert value(fams, P + "checkpoints") == 4
    assert value(fams, P + "last_checkpoint_id") == 9
    assert value(fams, P + "last_checkpoint_age_seconds") == 1.25
    assert value(fams, P + "last_checkpoint_duration_seconds") == 0.218
    assert value(fams, P + "last_checkpoint_stall_seconds") == 0.25
    assert value(fams, P + "last_checkpoint_worker_write_seconds") == 0.19
    assert value(fams, P + "last_checkpoint_bytes") == 2_000_000
    assert value(fams, P + "worker_restarts") == 2
    assert value(fams, P + "uptime_seconds") == 12.5
    # "topic:partition", split at the last colon (topic names may hold colons).
    assert value(fams, P + "kafka_consumer_lag", topic="events", partition="0") == 5
    assert value(fams, P + "kafka_consumer_lag", topic="events", partition="1") == 0
    assert value(fams, P + "kafka_consumer_lag", topic="my:topic", partition="2") == 12


def test_figures_not_known_yet_are_nan_and_kafka_lag_only_when_reading_kafka() -> None:
    snap = snapshot(watermark=None, watermark_lag_s=None, kafka_lag={},
                    checkpoint={"taken": 0, "last_id": None, "age_s": None,
                                "duration_s": None, "enabled": False})
    text = metrics.render(snap)
    assert text.endswith("\n")
    fams = families(text)
    for name in ("watermark_seconds", "watermark_lag_seconds", "last_checkpoint_id",
                 "last_checkpoint_age_seconds", "last_checkpoint_duration_seconds"):
        assert math.isnan(value(fams, P + name)), name
    assert value(fams, P + "checkpoints") == 0
    assert P + "kafka_consumer_lag" not in fams


def test_names_follow_prometheus_conventions() -> None:
    text = metrics.render(snapshot())
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE"))
    for name, kind in types.items():
        assert name.startswith(P)
        assert name.endswith("_total") == (kind == "counter"), name
        assert not any(unit in name for unit in ("_ms", "millis", "_minutes", "_bytes_mb")), name
