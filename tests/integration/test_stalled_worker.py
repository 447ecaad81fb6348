"""A stopped worker is noticed, named and handled like a crash, instead of hanging the run."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.test_lifecycle import ENDLESS, _start, _wait_workers


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def _snapshot(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=2) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]
    except OSError:
        return None


def test_a_stopped_worker_is_named_killed_and_the_run_restarts(tmp_path: Path) -> None:
    port = _free_port()
    cfg = tmp_path / "endless.ini"
    cfg.write_text(ENDLESS.replace("workers = 2\n", f"workers = 2\nworker_timeout = 3\n"
                                   f"checkpoint_interval = 1\nhttp = 127.0.0.1:{port}\n"))
    run = _start(cfg, tmp_path / "out")
    try:
        workers = _wait_workers(run, 2)
        time.sleep(1.5)  # a checkpoint to restart from
        victim = max(workers)  # some worker; which one does not matter
        os.kill(victim, signal.SIGSTOP)
        stalled_seen = restarted = False
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not restarted:
            snap = _snapshot(port)
            if snap:
                stalled_seen |= any(w["state"] == "stalled" and w["pid"] == victim
                                    for w in snap["workers"])
                restarted = snap["restarts"] == 1 and snap["state"] == "running"
            time.sleep(0.3)
        assert restarted, "the run did not restart after its worker stopped"
        assert stalled_seen, "the snapshot never called the stopped worker stalled"
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=30)
    assert f"(pid {victim}) made no progress for" in err
    assert f"(pid {victim}) died: killed by SIGKILL; restarting from the last checkpoint" in err
    assert run.returncode == 128 + signal.SIGTERM
