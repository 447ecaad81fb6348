"""One run per directory: an exclusive OS lock held on each folder a run writes.

``bspump-cluster run`` takes an exclusive ``flock`` on ``<folder>/.bspump-cluster.lock``
for its output and checkpoint folders before anything in them is read, deleted or
truncated, and holds it until it exits. The kernel frees the lock when the holder
dies, however it dies, so a kill -9 never leaves a stale lock behind. The file says
who holds it (pid, config, start time), so a second run is refused with the first
one's pid, and it stays after the run as the record of which config wrote the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.errors import StartRefused

LOCK_NAME = ".bspump-cluster.lock"


@dataclass
class DirLock:
    """A held lock; ``previous`` is what the file said before this run took it."""

    directory: Path
    fd: int
    previous: dict[str, Any] = field(default_factory=dict)

    def claim(self, owner: dict[str, Any]) -> None:
        """Write who holds the folder now (once the run is sure to go on)."""
        data = json.dumps({**owner, "pid": os.getpid(), "started": time.time()}).encode()
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data + b"\n", 0)

    def release(self) -> None:
        """Give the lock up (the kernel also does when the process ends)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        found = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def acquire(directory: Path, wait: float = 0.0, mode: int = 0o777) -> DirLock:
    """Lock ``directory`` for this run, creating it; StartRefused when another run holds it.

    The lock file still names the previous holder (``previous``) until :meth:`DirLock.claim`.

    ``wait`` seconds are given for a holder to go away (a partition task waits for the
    previous owner of its partition to finish its final checkpoint).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=mode)
        fd = os.open(directory / LOCK_NAME,
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StartRefused(f"cannot write in {directory}: {e.strerror or e}") from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _read(fd)
                os.close(fd)
                since = holder.get("started")
                when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) \
                    if isinstance(since, (int, float)) else ""
                raise StartRefused(
                    f"{directory} is in use by another run (pid {holder.get('pid', '?')}, "
                    f"config {holder.get('config', '?')}{when}); wait for it to end or "
                    "choose another output_dir") from None
            time.sleep(0.1)
    return DirLock(directory, fd, _read(fd))


def is_free(directory: Path) -> bool:
    """Whether no live process holds the lock of ``directory`` (True when there is none)."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
