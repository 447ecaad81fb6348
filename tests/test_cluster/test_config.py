"""Config loading and the validated cluster settings: every error names file, section, key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cluster.config import (
    PIPELINES_CONF,
    Config,
    ShardKeySpec,
    load_cluster_settings,
    parse_partition,
    parse_shard_key,
    partition_folder,
)
from cluster.errors import ConfigError

BASE = """
[cluster]
pipeline = mymod:MyPipeline
workers = 2
key_groups = 16

[pipeline:MyPipeline]
shard_key = user_id
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def settings_of(tmp_path: Path, text: str, name: str = "cluster.ini", **kw: object):
    path = write(tmp_path / name, text)
    return load_cluster_settings(Config.load(path), path, **kw)  # type: ignore[arg-type]


def error_of(tmp_path: Path, text: str, name: str = "cluster.ini", **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        settings_of(tmp_path, text, name, **kw)
    return str(info.value)


# -- loading ----------------------------------------------------------------------------


def test_pipelines_conf_is_read_first_and_the_config_file_wins(tmp_path: Path) -> None:
    write(tmp_path / PIPELINES_CONF, """
[cluster]
workers = 3
key_groups = 32
batch_size = 77

[pipeline:MyPipeline]
shard_key = account
time_field = ts
""")
    s = settings_of(tmp_path, """
[cluster]
pipeline = mymod:MyPipeline
workers = 5

[pipeline:MyPipeline]
shard_key = user_id
""")
    assert s.workers == 5  # both set it: the config file wins
    assert s.key_groups == 32  # only pipelines.conf sets it
    assert s.batch_size == 77
    assert s.routing.shard_key == ShardKeySpec(field="user_id")
    assert s.routing.time_field == "ts"
    assert s.config.get("cluster", "workers") == "5"


def test_an_error_in_pipelines_conf_names_pipelines_conf(tmp_path: Path) -> None:
    conf = write(tmp_path / PIPELINES_CONF, "[cluster]\nbatch_size = lots\n")
    message = error_of(tmp_path, BASE)
    assert message.startswith(f"{conf.resolve()} [cluster] batch_size:"), message
    assert "'lots'" in message


def test_the_config_file_is_not_read_twice_when_it_is_pipelines_conf(tmp_path: Path) -> None:
    path = write(tmp_path / PIPELINES_CONF, BASE)
    cfg = Config.load(path)
    assert cfg.get("cluster", "workers") == "2"
    assert cfg.where("cluster", "workers") == f"{path} [cluster] workers"


def test_values_remember_their_file(tmp_path: Path) -> None:
    write(tmp_path / PIPELINES_CONF, "[extra]\nx = 1\n")
    path = write(tmp_path / "c.ini", BASE)
    cfg = Config.load(path)
    assert cfg.where("extra", "x") == f"{(tmp_path / PIPELINES_CONF).resolve()} [extra] x"
    assert cfg.where("cluster", "workers") == f"{path} [cluster] workers"


def test_missing_file_and_ini_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "nope.ini")
    bad = write(tmp_path / "bad.ini", "[cluster]\nworkers = 1\nworkers = 2\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        Config.load(bad)


# -- typed values --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["two", "1.5", "", "0x10"])
def test_bad_int_names_file_section_and_key(tmp_path: Path, raw: str) -> None:
    text = BASE.replace("workers = 2", f"workers = {raw}")
    path = tmp_path / "cluster.ini"
    message = error_of(tmp_path, text)
    assert message.startswith(f"{path} [cluster] workers:"), message
    assert repr(raw) in message


@pytest.mark.parametrize("raw", ["soon", "nan", "1,5"])
def test_bad_float_names_file_section_and_key(tmp_path: Path, raw: str) -> None:
    text = BASE + f"allowed_lateness = {raw}\n"
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'cluster.ini'} [pipeline:MyPipeline] "
                              "allowed_lateness:"), message


def test_negative_float_is_refused_with_its_bound(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE + "allowed_lateness = -1\n")
    assert "[pipeline:MyPipeline] allowed_lateness" in message
    assert "at least" in message


def test_int_bounds_and_underscores(tmp_path: Path) -> None:
    s = settings_of(tmp_path, BASE.replace("key_groups = 16", "key_groups = 1_024"))
    assert s.key_groups == 1024
    message = error_of(tmp_path, BASE.replace("workers = 2", "workers = 0"))
    assert "[cluster] workers" in message and "at least 1" in message


def test_bool_values(tmp_path: Path) -> None:
    path = write(tmp_path / "b.ini", "[s]\na = Yes\nb = off\nc = 1\nd = maybe\n")
    cfg = Config.load(path)
    assert cfg.get_bool("s", "a", False) is True
    assert cfg.get_bool("s", "b", True) is False
    assert cfg.get_bool("s", "c", False) is True
    assert cfg.get_bool("s", "missing", True) is True
    with pytest.raises(ConfigError) as info:
        cfg.get_bool("s", "d", False)
    assert str(info.value).startswith(f"{path} [s] d:")
    assert "'maybe'" in str(info.value)


def test_unknown_key_names_file_section_and_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE.replace("workers = 2", "wrokers = 2"))
    assert message.startswith(f"{tmp_path / 'cluster.ini'} [cluster] wrokers: unknown key")
    assert "workers" in message  # the known keys are listed
    message = error_of(tmp_path, BASE + "shardkey = x\n")
    assert message.startswith(f"{tmp_path / 'cluster.ini'} [pipeline:MyPipeline] shardkey:")


def test_missing_cluster_section(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[pipeline:MyPipeline]\nshard_key = user_id\n")
    assert message == f"{tmp_path / 'cluster.ini'}: missing section [cluster]"


def test_missing_pipeline_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE.replace("pipeline = mymod:MyPipeline\n", ""))
    assert message.startswith(f"{tmp_path / 'cluster.ini'} [cluster] pipeline: missing key")


def test_pipeline_must_be_module_colon_class(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE.replace("mymod:MyPipeline", "mymod.MyPipeline"))
    assert "[cluster] pipeline" in message and "module:Class" in message


def test_missing_pipeline_section_and_shard_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE.replace("[pipeline:MyPipeline]", "[pipeline:Other]"))
    assert message == (f"{tmp_path / 'cluster.ini'}: missing section [pipeline:MyPipeline] "
                       "(it names shard_key)")
    message = error_of(tmp_path, BASE.replace("shard_key = user_id", "time_field = ts"))
    assert message.startswith(f"{tmp_path / 'cluster.ini'} [pipeline:MyPipeline] shard_key:")


@pytest.mark.parametrize("raw", [
    "user id", "geo_cell(latitude, longitude)", "geo_cell(latitude, longitude, big)",
    "geo_cell(latitude, longitude, 0)", "geo_cell(latitude, longitude, -1)",
    "geo_cell(, longitude, 1)", "geo_cell latitude, longitude, 1", "geo_cell(a, b, 1",
    "f(x)",
])
def test_bad_shard_key_names_file_section_and_key(tmp_path: Path, raw: str) -> None:
    message = error_of(tmp_path, BASE.replace("shard_key = user_id", f"shard_key = {raw}"))
    assert message.startswith(f"{tmp_path / 'cluster.ini'} [pipeline:MyPipeline] shard_key:"),\
        message


def test_workers_above_key_groups(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE.replace("workers = 2", "workers = 17"))
    assert message.startswith(f"{tmp_path / 'cluster.ini'} [cluster] workers:")
    assert "17" in message and "16" in message
    # The same check holds for --workers given on the command line.
    with pytest.raises(ConfigError, match="key_groups"):
        settings_of(tmp_path, BASE, workers=20)
    assert settings_of(tmp_path, BASE.replace("workers = 2", "workers = 16")).workers == 16


def test_error_without_the_key_names_the_section_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.ini", BASE)
    cfg = Config.load(path)
    assert str(cfg.error("cluster", "absent", "x")) == f"{path} [cluster] absent: x"


# -- settings -------------------------------------------------------------------------------


def test_geo_cell_shard_key_is_parsed(tmp_path: Path) -> None:
    s = settings_of(tmp_path, BASE.replace("shard_key = user_id",
                                           "shard_key = geo_cell(latitude, longitude, 0.5)"))
    assert s.routing.shard_key == ShardKeySpec(geo=("latitude", "longitude", 0.5))
    assert s.routing.shard_key.describe() == "geo_cell(latitude, longitude, 0.5)"


def test_field_whose_name_starts_with_geo_cell_is_a_field() -> None:
    cfg = Config.from_string("[p]\nshard_key = geo_cell_id\n")
    assert parse_shard_key(cfg, "p", "geo_cell_id") == ShardKeySpec(field="geo_cell_id")


def test_settings_defaults_and_values(tmp_path: Path) -> None:
    s = settings_of(tmp_path, BASE + "time_field = ts\nallowed_lateness = 2.5\n"
                    "source = bspump.file:FileJSONLinesSource\n")
    assert (s.pipeline, s.pipeline_id, s.workers, s.key_groups) == (
        "mymod:MyPipeline", "MyPipeline", 2, 16)
    assert (s.batch_size, s.max_record_bytes, s.progress, s.max_lag) == (
        1000, 1 << 20, "auto", None)
    assert s.routing.time_field == "ts"
    assert s.routing.allowed_lateness == 2.5
    assert s.routing.source == "bspump.file:FileJSONLinesSource"
    assert s.routing.sink is None


def test_pipeline_id_picks_the_pipeline_section(tmp_path: Path) -> None:
    text = BASE.replace("[pipeline:MyPipeline]", "[pipeline:Other]").replace(
        "key_groups = 16", "key_groups = 16\npipeline_id = Other")
    s = settings_of(tmp_path, text)
    assert s.pipeline_id == "Other"
    assert s.routing.pipeline_id == "Other"


# -- partition tasks -----------------------------------------------------------------------


def test_tasks_default_to_one_and_accept_partition(tmp_path: Path) -> None:
    assert settings_of(tmp_path, BASE).tasks == "one"
    s = settings_of(tmp_path, BASE.replace("key_groups = 16", "key_groups = 16\ntasks = partition"))
    assert s.tasks == "partition" and s.partition is None


def test_tasks_errors_name_the_key(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("key_groups = 16", "key_groups = 16\ntasks = many"))
    assert "[cluster] tasks" in msg and "'many'" in msg
    msg = error_of(tmp_path, BASE.replace(
        "key_groups = 16", "key_groups = 16\ntasks = partition\ncheckpoint_dir = none"))
    assert "[cluster] checkpoint_dir" in msg and "needs checkpoints" in msg


def test_a_partition_task_gets_its_own_folders_and_no_page(tmp_path: Path) -> None:
    text = BASE.replace("key_groups = 16", "key_groups = 16\nhttp = 127.0.0.1:0")
    task_out = tmp_path / "out" / "events-3"
    s = settings_of(tmp_path, text, output_dir=str(task_out), partition="events:3")
    assert s.partition == "events:3" and s.output_dir == task_out
    assert s.checkpoint_dir == task_out / "checkpoints" and s.http is None
    shared = tmp_path / "shared-cp"
    s = settings_of(tmp_path, text.replace("http =", f"checkpoint_dir = {shared}\nhttp ="),
                    output_dir=str(task_out), partition="my.topic-a:12")
    assert s.checkpoint_dir == shared / "my.topic-a-12"
    assert partition_folder("my.topic-a:12") == "my.topic-a-12"


@pytest.mark.parametrize("bad", ["events", "events:", ":3", "events:x", "events:-1"])
def test_a_bad_partition_is_refused(tmp_path: Path, bad: str) -> None:
    assert "expected topic:number" in error_of(tmp_path, BASE, partition=bad)
    with pytest.raises(ConfigError):
        parse_partition(bad)
