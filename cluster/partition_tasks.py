"""A host member's partition tasks: one process per partition, started and stopped.

Each partition this host is assigned runs as ``bspump-cluster run CONFIG --partition
TOPIC:N``, with its results in ``<output_dir>/<topic>-<N>/``. A task is stopped with
SIGTERM (it writes a final checkpoint) and killed if it is still there after
:data:`TASK_STOP_TIMEOUT`. A task that ends by itself with an error is a failure
the member acts on; one that ends with exit 0 has reached its end (``stop_at_end``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cluster import exits
from cluster.config import ClusterSettings, load_cluster_settings, partition_folder
from cluster.exits import describe_exit
from cluster.logs import MEMBER_ENV, TASK_ENV
from cluster.process import child_setup

log = logging.getLogger("bspump-cluster.member")

TASK_STOP_TIMEOUT = 10.0  # a task's final checkpoint (3 s) and its supervisor's grace (4 s)


@dataclass
class Task:
    """One partition task: its process, its checkpoints, the offset committed for it."""

    partition: str
    proc: subprocess.Popen[bytes]
    checkpoint_dir: Path
    committed: int | None = None
    stopping: bool = False


class PartitionTasks:
    """The partition tasks of one member, by partition (``topic:N``)."""

    def __init__(self, settings: ClusterSettings, member: str, in_process: bool = False) -> None:
        self.settings = settings
        self.member = member  # host:pid, named in the tasks' checkpoint manifests
        self.in_process = in_process
        self._tasks: dict[str, Task] = {}
        self.started = 0

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks.values()))

    def __contains__(self, partition: object) -> bool:
        return partition in self._tasks

    def __getitem__(self, partition: str) -> Task:
        return self._tasks[partition]

    def _dirs(self, partition: str) -> tuple[Path, Path]:
        """The task's output folder and checkpoint folder, as its own settings name them."""
        out = self.settings.output_dir / partition_folder(partition)
        task = load_cluster_settings(self.settings.config, self.settings.config_path,
                                     workers=self.settings.workers, output_dir=str(out),
                                     partition=partition)
        assert task.checkpoint_dir is not None
        return out, task.checkpoint_dir

    def start(self, partition: str) -> Task:
        """Start the task of ``partition``."""
        out, cp_dir = self._dirs(partition)
        # -P: the working directory does not come before the installed packages.
        argv = [sys.executable, "-P", "-m", "cluster", "run", str(self.settings.config_path),
                "--partition", partition, "--output-dir", str(out),
                "--workers", str(self.settings.workers)]
        if self.in_process:
            argv.append("--in-process")
        env = {**os.environ, MEMBER_ENV: self.member, TASK_ENV: partition}
        # Own session: a Ctrl-C on the terminal reaches the member, which stops each task
        # once; the task still dies with the member (PDEATHSIG).
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                preexec_fn=child_setup, start_new_session=True)
        task = self._tasks[partition] = Task(partition, proc, cp_dir)
        self.started += 1
        return task

    async def stop(self, why: str) -> None:
        """SIGTERM every running task (each writes a final checkpoint); wait until all are gone.

        A task still running :data:`TASK_STOP_TIMEOUT` seconds later is killed.
        """
        running = [t for t in self._tasks.values() if t.proc.poll() is None]
        if running:
            fields = {"reason": why, "partitions": ", ".join(t.partition for t in running)}
            log.info("%(reason)s: stopping the tasks of %(partitions)s", fields,
                     extra={"event": "tasks_stopping", **fields})
        for t in running:
            t.stopping = True
            t.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + TASK_STOP_TIMEOUT
        while any(t.proc.poll() is None for t in running):
            if time.monotonic() > deadline:
                for t in running:
                    if t.proc.poll() is None:
                        log.error("task of %s still running %.0f s after stop: killing it",
                                  t.partition, TASK_STOP_TIMEOUT,
                                  extra={"event": "task_kill", "partition": t.partition,
                                         "grace_s": TASK_STOP_TIMEOUT})
                        t.proc.kill()
                break
            await asyncio.sleep(0.05)
        for t in running:
            t.proc.wait()

    def clear(self) -> None:
        """Forget every task (all stopped)."""
        self._tasks.clear()

    def failure(self) -> str | None:
        """What went wrong, when a task ended by itself other than with exit 0."""
        failed = None
        for t in self._tasks.values():
            rc = t.proc.poll()
            if rc is None or t.stopping or rc == exits.OK:
                continue
            failed = (f"task of partition {t.partition} (pid {t.proc.pid}) ended: "
                      f"{describe_exit(rc)}")
        return failed

    def running(self) -> bool:
        """Whether any task is still running."""
        return any(t.proc.poll() is None for t in self._tasks.values())
