"""Many short-lived keys through a small ring: real workers, real shared memory.

21,000 keys, each alive for a few seconds over six hours of event time, plus one
minute with 3,000 new keys at once, go through ``max_keys = 1000`` on two workers.
Rows of keys whose windows are merged are reused and the burst grows the rings, so
the windows equal the reference and nothing is a dead letter. With ``key_limit``
set, the burst's keys that find no row are dead letters naming key_limit, and the
windows equal the reference over the other records.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    CONFIGS,
    ROOT,
    SEED_CONFIG,
    T0,
    Run,
    descendants,
    run_config,
    shm_segments,
)
from tests.reference import compute

KEYS = 21_000
BURST = 3_000
BURST_AT = 10_000  # seconds after T0


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """One or two events per key, a few seconds apart; keys follow each other in time."""
    rng = random.Random(11)
    events: list[tuple[float, str]] = []
    for i in range(KEYS):
        t = T0 + i + rng.uniform(0, 0.9)
        events.append((t, f"k{i}"))
        if i % 5 == 0:
            events.append((t + rng.uniform(1, 20), f"k{i}"))
    events += [(T0 + BURST_AT + i * 0.01, f"burst{i}") for i in range(BURST)]
    events.sort()
    return [json.dumps({"user_id": key, "type": f"type{rng.randrange(3)}", "timestamp": t,
                        "latitude": 10.5, "longitude": -20.5}) for t, key in events]


def write_config(tmp_path: Path, lines: list[str], extra: str = "",
                 cluster: str = "") -> Path:
    """The seed pipeline, its TimeWindowAnalyzer counting per user over a short window."""
    data = tmp_path / "input.jsonl"
    data.write_text("\n".join(lines) + "\n")
    text = SEED_CONFIG.format(configs=CONFIGS, input=data,
                              persistent=tmp_path / "persistent.npy")
    text = text.replace("key_groups = 64\n", "key_groups = 64\n" + cluster)
    section = "[pipeline:SeedPipeline:HourlyCountAnalyzer]\ncount_field = type\n"
    assert section in text
    text = text.replace(section, "[pipeline:SeedPipeline:HourlyCountAnalyzer]\n"
                        "count_field = user_id\nwindow_size = 600\nmax_keys = 1000\n" + extra)
    cfg = tmp_path / "churn.ini"
    cfg.write_text(text)
    return cfg


def windows(out: Path) -> list[tuple[float, float, str, float]]:
    rows = [json.loads(x) for x in
            (out / "SeedPipeline.HourlyCountAnalyzer.windows.jsonl").read_text().splitlines()]
    return [(r["window_start"], r["window_end"], r["key"], r["count"]) for r in rows]


@pytest.mark.parametrize("workers", [2, None], ids=["2 workers", "in-process"])
def test_short_lived_keys_never_run_out_of_rows(workers: int | None, lines: list[str],
                                                tmp_path: Path) -> None:
    run = run_config(write_config(tmp_path, lines), tmp_path / "out", workers=workers,
                     in_process=workers is None)
    assert run.returncode == 0, run.stderr
    assert "window ring grown to" in run.stderr  # the burst needed more rows
    run_id = re.search(r"bspump-cluster: run (\S+):", run.stderr)
    assert run_id is not None, run.stderr
    left = {s for s in shm_segments() if s.startswith(f"bspc-{run_id[1]}-")}
    assert not left, "a grown ring's segment was left behind"
    summary = run.summary()
    assert run.jsonl("dead-letters.jsonl") == []
    assert summary["dead_letters"] == 0
    got = windows(run.out)
    assert len(got) == len(set(got)), "a window row was written twice"
    ref = compute(lines, lateness=30, resolution=60, count_field="user_id")
    assert len({w[2] for w in ref.windows}) == KEYS + BURST
    assert set(got) == ref.windows


def test_key_limit_dead_letters_the_records_it_cannot_place(lines: list[str],
                                                            tmp_path: Path) -> None:
    run = run_config(write_config(tmp_path, lines, "key_limit = 1000\n"), tmp_path / "out",
                     workers=2)
    assert run.returncode == 0, run.stderr
    dead = run.jsonl("dead-letters.jsonl")
    summary = run.summary()
    assert summary["dead_letters"] == len(dead) > 0
    assert all("key_limit=1000 reached" in d["reason"] and "HourlyCountAnalyzer" in d["reason"]
               for d in dead), dead[:3]
    refused = {(d["record"]["user_id"], d["record"]["timestamp"]) for d in dead}
    assert len(refused) == len(dead)
    # Refused during the burst only: the rest of the run's keys fit in reused rows.
    assert sum(k.startswith("burst") for k, _ in refused) > len(refused) * 0.9
    assert all(T0 + BURST_AT <= t < T0 + BURST_AT + 60 for _, t in refused)
    # One warning per worker that refused a record, not one per record.
    assert 1 <= run.stderr.count("this warning is given once") <= 2, run.stderr[-2000:]
    placed = [x for x in lines
              if (json.loads(x)["user_id"], json.loads(x)["timestamp"]) not in refused]
    ref = compute(placed, lateness=30, resolution=60, count_field="user_id")
    assert set(windows(run.out)) == ref.windows


CHECKPOINTS = "checkpoint_events = 2000\ncheckpoint_interval = 60\nmax_restarts = 2\n"


def _start(config: Path, out: Path) -> subprocess.Popen[str]:
    # stdout (the spec analyzers' prints) is not read while the run goes: not a pipe.
    return subprocess.Popen([sys.executable, "-m", "cluster", "run", str(config), "-o", str(out),
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _after_checkpoint(proc: subprocess.Popen[str], out: Path, n: int) -> None:
    """Wait until the run has completed checkpoint ``n`` (and is still running)."""
    deadline = time.monotonic() + 60
    while not any(int(m.parent.name.split("-")[1]) >= n
                  for m in (out / "checkpoints").glob("cp-*/MANIFEST.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"checkpoint {n} was not completed"
        time.sleep(0.01)


def _check_churn(run: Run, lines: list[str]) -> None:
    assert run.returncode == 0, run.stderr
    assert run.summary()["dead_letters"] == 0
    got = windows(run.out)
    assert len(got) == len(set(got)), "a window row was written twice"
    assert set(got) == compute(lines, lateness=30, resolution=60,
                               count_field="user_id").windows


def test_worker_killed_after_rows_were_reused_restores_exactly(lines: list[str],
                                                               tmp_path: Path) -> None:
    config = write_config(tmp_path, lines, cluster=CHECKPOINTS)
    out = tmp_path / "out"
    proc = _start(config, out)
    _after_checkpoint(proc, out, 1)  # rows have been reused by then (about 9,000 events)
    workers = sorted(p for p, c in descendants(proc.pid).items() if "-m workers" in c)
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert f"(pid {workers[0]}) died: killed by SIGKILL; restarting" in stderr, stderr[-2000:]
    _check_churn(Run(proc.returncode, "", stderr, out), lines)


def test_stopped_after_growth_resumes_on_one_worker(lines: list[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, lines, cluster=CHECKPOINTS)
    out = tmp_path / "out"
    proc = _start(config, out)
    _after_checkpoint(proc, out, 2)  # past the burst (events 12,000-15,000): rings grew
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    run = run_config(config, out, workers=1)
    assert run.summary()["restored_from_checkpoint"] is not None
    _check_churn(run, lines)
