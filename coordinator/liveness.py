"""Whether each worker is alive: its pid, when it was last heard, done, stalled.

Every message from a worker (a heartbeat too) counts as a sign of life. A worker
silent for longer than ``worker_timeout`` is stopped (SIGSTOP, swapped out) or wedged
in a call: the coordinator kills it, and the supervisor then restarts the run from
the last checkpoint, as after any death.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

STALLED_AFTER = 5.0  # seconds of silence after which the snapshot calls a worker stalled


class Liveness:
    """Each worker's pid, last message, and whether it is done or was killed for silence."""

    def __init__(self, workers: int, worker_timeout: float | None) -> None:
        self.workers = workers
        self.worker_timeout = worker_timeout
        self.pids: list[int | None] = [None] * workers
        self.last_heard = [time.monotonic()] * workers
        self.done = [False] * workers
        self.stalled: set[int] = set()  # workers killed for silence

    def hello(self, worker: int, pid: int) -> None:
        """A worker started."""
        self.pids[worker] = pid
        self.last_heard[worker] = time.monotonic()

    def heard(self, worker: int) -> None:
        """A message came from ``worker``."""
        self.last_heard[worker] = time.monotonic()

    def check(self, warn: Callable[..., None]) -> None:
        """Kill every worker silent for longer than ``worker_timeout`` (and say so)."""
        limit = self.worker_timeout
        if not limit:
            return
        now = time.monotonic()
        for w, heard in enumerate(self.last_heard):
            pid = self.pids[w]
            if pid is None or self.done[w] or w in self.stalled or now - heard <= limit:
                continue
            self.stalled.add(w)
            silent = now - heard
            warn("worker %d (pid %d) made no progress for %.0f s (worker_timeout = %g s): "
                 "stopped or wedged; killing it so the run restarts from the last "
                 "checkpoint", w, pid, silent, limit,
                 extra={"event": "worker_stalled", "worker": w, "worker_pid": pid,
                        "silent_s": silent, "worker_timeout_s": limit})
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def states(self) -> list[str]:
        """``running``, ``stalled`` (killed, or silent a while) or ``done``, per worker."""
        limit = self.worker_timeout
        stalled_after = max(2.0, min(STALLED_AFTER, limit / 2)) if limit else STALLED_AFTER
        now = time.monotonic()
        return ["done" if self.done[w] else
                ("stalled" if w in self.stalled or now - self.last_heard[w] > stalled_after
                 else "running") for w in range(self.workers)]

    def silent_s(self) -> list[float]:
        """Seconds since each worker was last heard."""
        now = time.monotonic()
        return [now - heard for heard in self.last_heard]
