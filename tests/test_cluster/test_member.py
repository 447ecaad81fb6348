"""``tasks = partition`` refuses what it cannot run, before joining any group."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CONFIGS, SEED_CONFIG, cli


def _config(tmp_path: Path) -> Path:
    data = tmp_path / "input.jsonl"
    data.write_text('{"user_id": "u1", "timestamp": 1}\n')
    cfg = tmp_path / "tasks.ini"
    cfg.write_text(SEED_CONFIG.format(configs=CONFIGS, input=data,
                                      persistent=tmp_path / "p.npy")
                   .replace("key_groups = 64", "key_groups = 64\ntasks = partition"))
    return cfg


def test_partition_tasks_need_a_kafka_source(tmp_path: Path) -> None:
    p = cli("run", str(_config(tmp_path)), "-o", str(tmp_path / "out"), timeout=60)
    assert p.returncode == 2, p.stderr
    assert "[cluster] tasks" in p.stderr and "needs a KafkaSource" in p.stderr
    assert "FileJSONLinesSource" in p.stderr


def test_fresh_is_refused_when_hosts_share_the_checkpoints(tmp_path: Path) -> None:
    p = cli("run", str(_config(tmp_path)), "--fresh", "-o", str(tmp_path / "out"), timeout=60)
    assert p.returncode == 2, p.stderr
    assert "--fresh with tasks = partition" in p.stderr and "remove it by hand" in p.stderr
