"""The supervisor's JSON log lines carry their event and fields (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import CONFIGS, ROOT, descendants

CONFIG = f"""
[cluster]
pipeline = spec_examples:AggregationPipeline
python_path = {CONFIGS}
workers = 2
checkpoint_dir = none

[pipeline:AggregationPipeline]
shard_key = user_id
time_field = timestamp
source = bspump.generator:GeneratorSource
sink = bspump.common:NullSink

[pipeline:AggregationPipeline:GeneratorSource]
count = 0
rate = 5000
"""


def test_a_dead_worker_is_one_json_event_naming_the_process(tmp_path: Path) -> None:
    cfg = tmp_path / "endless.ini"
    cfg.write_text(CONFIG)
    proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(cfg), "-o",
                             str(tmp_path / "out"), "--log-format", "json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    workers: dict[int, str] = {}
    while len(workers) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.1)
        workers = {p: c for p, c in descendants(proc.pid).items() if "-m workers" in c}
    victim = min(workers)
    index = workers[victim].split("--worker ")[1].split()[0]
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 3, err
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    by_event = {line.get("event"): line for line in lines}
    died = by_event["died"]
    assert died["role"] == "supervisor" and died["level"] == "error"
    assert died["process"] == f"worker {index}" and died["pid"] == victim
    assert died["exit"] == "killed by SIGKILL" and died["action"] == "stopping the run"
    assert died["message"] == f"worker {index} (pid {victim}) died: killed by SIGKILL; " \
                              "stopping the run"
    start = by_event["start"]
    assert start["workers"] == 2 and start["coordinator_pid"] != proc.pid
    assert sorted(int(p) for p in start["worker_pids"].split(", ")) == sorted(workers)
    stop = by_event["stop"]
    assert stop["exit_code"] == 3 and stop["outcome"] == "a worker died"
