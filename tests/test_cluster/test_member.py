"""``tasks = partition``: what it refuses before joining a group, and the group's status."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cluster import checkpoint
from cluster import manifest as manifests
from cluster.cli import format_partitions
from cluster.member import partition_status, render_metrics
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


def _manifest(cp_dir: Path, cp_id: int, created: float, read: int, finished: bool = False,
              partition: str = "ev:0") -> None:
    folder = checkpoint.create_folder(cp_dir, cp_id)
    checkpoint.write_manifest(folder, manifests.decode({
        "format": checkpoint.FORMAT, "id": cp_id, "created": created, "owner": "h:1",
        "finished": finished, "position": {partition: read}, "partition": partition,
        "pipeline": "P", "workers": 1, "key_groups": 4, "outputs": {},
        "intake": {"watermark": 1_700_000_000.0, "max_time": 0.0, "next_boundary": 0.0},
        "counters": {"records_read": read, "dead": 2, "late": 1,
                     "events_processed": max(read - 3, 0), "sessions_ended": 0, "window_rows": 0},
        "files": checkpoint.ShardWriter(folder, 0).close()}))


def test_partition_status_reads_the_two_newest_checkpoints(tmp_path: Path) -> None:
    cp_dir = tmp_path / "cp"
    _manifest(cp_dir, 1, 1000.0, 100)
    _manifest(cp_dir, 2, 1010.0, 600)
    _manifest(cp_dir, 3, 1020.0, 2600)
    checkpoint.create_folder(cp_dir, 4)  # being written: not counted
    row = partition_status("ev:0", cp_dir, now=1025.0)
    assert row["checkpoint_id"] == 3 and row["offset"] == 2600 and row["owner"] == "h:1"
    assert row["records_per_s"] == 200.0 and row["checkpoint_age_s"] == 5.0
    assert row["dead_letters"] == 2 and row["late_events"] == 1 and not row["finished"]
    lines = format_partitions([row, partition_status("ev:1", tmp_path / "none")])
    assert lines[0].split()[:3] == ["partition", "owner", "state"]
    assert lines[1].split()[:5] == ["ev:0", "h:1", "running", "2,600", "2,600"]
    assert "no checkpoint" in lines[2]


def test_status_lists_partitions_of_the_shared_location(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    for n in (0, 2, 10):
        _manifest(out / f"my-topic-{n}" / "checkpoints", 1, 1000.0, 10 * n + 5, finished=True,
                  partition=f"my-topic:{n}")
    (out / "my-topic-7").mkdir()  # results only, no checkpoint yet: not listed
    p = cli("status", str(cfg), "-o", str(out), "--json", timeout=60)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [r["partition"] for r in rows] == ["my-topic:0", "my-topic:2", "my-topic:10"]
    assert [r["offset"] for r in rows] == [5, 25, 105] and all(r["finished"] for r in rows)
    empty = cli("status", str(cfg), "-o", str(tmp_path / "elsewhere"), timeout=60)
    assert empty.returncode == 1 and "no partition has a checkpoint" in empty.stderr


def test_checkpoints_are_listed_per_partition(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    for n in (1, 10):
        _manifest(out / f"t-{n}" / "checkpoints", 4, 1000.0, n, finished=n == 10,
                  partition=f"t:{n}")
    listing = cli("checkpoints", str(cfg), "-o", str(out), timeout=60)
    assert listing.returncode == 0, listing.stderr
    text = listing.stdout
    assert text.index("partition t:1: 1 checkpoints") < text.index("partition t:10: 1 checkp")
    assert "written by h:1  finished" in text
    one = cli("checkpoints", str(cfg), "-o", str(out), "--partition", "t:1", "--verify", "4",
              timeout=60)
    assert one.returncode == 0 and "complete" in one.stdout and "written by h:1" in one.stdout
    vague = cli("checkpoints", str(cfg), "-o", str(out), "--verify", "4", timeout=60)
    assert vague.returncode == 1 and "--partition TOPIC:N" in vague.stderr
    missing = cli("checkpoints", str(cfg), "-o", str(out), "--partition", "t:5", timeout=60)
    assert missing.returncode == 1 and "t:1, t:10" in missing.stderr


def test_member_metrics_read_back_by_prometheus(tmp_path: Path) -> None:
    from prometheus_client import parser

    cp_dir = tmp_path / "cp"
    _manifest(cp_dir, 1, 1000.0, 100, partition="my:topic:3")
    _manifest(cp_dir, 2, 1010.0, 600, partition="my:topic:3")
    row = partition_status("my:topic:3", cp_dir, now=1012.0)
    row["lag"] = 40
    empty = partition_status("ev:0", tmp_path / "none")
    snap = {"member": "h:1", "group": "g", "topics": ["my:topic", "ev"], "pipeline": "P",
            "state": "running", "uptime_s": 3.0, "rebalances": 2, "tasks_started": 5,
            "partitions": [row, empty]}
    fams = {f.name: f for f in parser.text_string_to_metric_families(render_metrics(snap))}
    p = "bspump_cluster_"
    info = fams[p + "member_info"].samples[0]
    assert info.labels == {"pipeline": "P", "member": "h:1", "group": "g", "state": "running"}
    assert fams[p + "member_partitions"].samples[0].value == 2
    assert fams[p + "member_rebalances"].samples[0].value == 2  # the parser drops _total
    by_partition = {(s.labels["topic"], s.labels["partition"]): s.value
                    for s in fams[p + "partition_offset"].samples}
    assert by_partition[("my:topic", "3")] == 600 and math.isnan(by_partition[("ev", "0")])
    lag = {s.labels["partition"]: s.value for s in fams[p + "partition_lag"].samples}
    assert lag["3"] == 40
    assert fams[p + "partition_records_read"].samples[0].value == 600
    assert fams[p + "partition_checkpoint_age_seconds"].samples[0].value == 2.0
    assert fams[p + "partition_finished"].samples[0].value == 0.0


def test_a_member_waiting_for_kafka_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "down.ini"
    cfg.write_text(f"""
[cluster]
pipeline = spec_examples:AggregationPipeline
python_path = {CONFIGS}
workers = 1
tasks = partition
output_dir = {tmp_path / "out"}

[pipeline:AggregationPipeline]
shard_key = user_id

[connection:KafkaConnection]
bootstrap_servers = 127.0.0.1:{port}

[pipeline:AggregationPipeline:KafkaSource]
topic = events

[pipeline:AggregationPipeline:KafkaSink]
topic = out
""")
    log = tmp_path / "member.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(cfg)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while f"cannot reach Kafka at 127.0.0.1:{port}" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 128 + signal.SIGTERM
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "retrying in" in log.read_text()
