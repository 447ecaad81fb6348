"""``topic:N`` partitions: one parse for every reader, and a member's figures of them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cluster import logs
from cluster.config import Config, load_cluster_settings, parse_partition, partition_folder
from cluster.errors import ConfigError
from cluster.partition_figures import partition_checkpoint_dirs, render_metrics, report
from tests.conftest import CONFIGS, SEED_CONFIG


@pytest.mark.parametrize(("good", "expected"), [
    ("t:0", ("t", 0)), ("events:12", ("events", 12)), ("my:topic:3", ("my:topic", 3)),
    ("a-b.c:7", ("a-b.c", 7)),
])
def test_a_partition_is_topic_and_number(good: str, expected: tuple[str, int]) -> None:
    assert parse_partition(good) == expected


@pytest.mark.parametrize("bad", ["t:x", ":3", "t:-1", "t", "t:", "t:1.5", ""])
def test_a_bad_partition_is_refused_naming_the_value(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_partition(bad)
    assert repr(bad) in str(info.value) and "topic:number" in str(info.value)


def test_a_partition_folder_is_read_back_as_its_partition(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("")
    cfg = tmp_path / "c.ini"
    cfg.write_text(SEED_CONFIG.format(configs=CONFIGS, input=data, persistent=tmp_path / "p"))
    settings = load_cluster_settings(Config.load(cfg), cfg, output_dir=str(tmp_path / "out"))
    names = ["my:topic:3", "ev:0", "ev:10", "a-1:2"]
    for name in names:
        (tmp_path / "out" / partition_folder(name) / "checkpoints").mkdir(parents=True)
    (tmp_path / "out" / "no-partition-here").mkdir()
    assert sorted(partition_checkpoint_dirs(settings), key=parse_partition) == \
        ["a-1:2", "ev:0", "ev:10", "my:topic:3"]


def _row(partition: str, read: int, lag: int | None, age: float, rate: float = 0.0,
         finished: bool = False) -> dict[str, object]:
    return {"partition": partition, "checkpoint_id": 1, "owner": "h:1", "finished": finished,
            "offset": read, "records_read": read, "records_per_s": rate, "dead_letters": 2,
            "late_events": 1, "watermark": None, "checkpoint_age_s": age, "lag": lag}


def test_the_report_line_carries_its_figures_as_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bspump-cluster.member"):
        report([_row("ev:0", 1500, 40, 3.2, rate=120.0), _row("ev:1", 500, None, 7.6),
                {"partition": "ev:2", "checkpoint_id": None}])
    (record,) = caplog.records
    line = json.loads(logs.JsonFormatter("supervisor").format(record))
    assert line["event"] == "partitions_report"
    assert line["message"] == ("partitions ev:0, ev:1: 2,000 records read (120/s), 40 behind "
                               "the end, 4 dead letters, 2 late; checkpoints 8 s old")
    # The fields are the message's words, as the format string's arguments were.
    assert {k: line[k] for k in ("partitions", "records_read", "records_per_s", "lag",
                                 "dead_letters", "late_events", "checkpoint_age_s")} == {
        "partitions": "ev:0, ev:1", "records_read": "2,000", "records_per_s": "120",
        "lag": "40", "dead_letters": "4", "late_events": "2", "checkpoint_age_s": "8"}


def test_metrics_label_each_partition_by_topic_and_number() -> None:
    snap = {"member": "h:1", "group": "g", "topics": ["a:b"], "pipeline": "P", "state": "running",
            "uptime_s": 1.0, "rebalances": 1, "tasks_started": 1,
            "partitions": [_row("a:b:7", 5, 0, 1.0)]}
    text = render_metrics(snap)
    assert 'bspump_cluster_partition_offset{member="h:1",partition="7",pipeline="P",' \
           'topic="a:b"} 5.0' in text
