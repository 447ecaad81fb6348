"""The process supervisor behind ``bspump-cluster run``.

It starts the coordinator (which validates the whole config and binds its
sockets), then the workers, and watches them all:

- signals are blocked while children start, so none is left half-started;
- workers ignore SIGINT: Ctrl-C is handled here, once;
- the first SIGINT/SIGTERM asks the coordinator to stop, the second kills everyone;
- a worker (or the coordinator) that dies unexpectedly is named; with checkpoints on,
  every process is stopped and the run starts again from the last complete
  checkpoint (up to ``max_restarts`` times), else the run stops with exit 3;
- every child asks Linux to kill it if the supervisor dies, so nothing is orphaned;
- the output and checkpoint folders are locked for the whole run (one run per
  folder), before anything in them is read or deleted;
- the run's shared-memory segments and sockets are removed on the way out, and
  leftovers of earlier runs whose supervisor died (segments, per-run folders) are
  removed on the way in.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cluster import dirlock, exits, shm
from cluster.config import ClusterSettings
from cluster.errors import StartRefused
from cluster.exits import describe_exit
from cluster.process import child_arguments, child_setup

log = logging.getLogger("bspump-cluster")

STOP_GRACE = 4.0  # seconds between asking to stop and killing: everything is gone within 5 s
READY_TIMEOUT = 120.0
# A partition task waits this long for the previous owner of its partition to let go.
PARTITION_LOCK_WAIT = 20.0
RUN_DIR_PREFIX = "bspump-cluster-"


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]


class Supervisor:
    """Runs one coordinator and N workers until the input ends or a signal arrives."""

    def __init__(self, settings: ClusterSettings, in_process: bool = False,
                 fresh: bool = False) -> None:
        self.settings = settings
        self.in_process = in_process
        self.fresh = fresh
        self.restarts = 0
        # --in-process: one worker, a process like any other (the coordinator runs no
        # worker code; it meets its workers over ZeroMQ only).
        self.workers = 1 if in_process else settings.workers
        self.run_id = f"{os.getpid()}.{os.urandom(4).hex()}"
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{self.run_id}-"))
        os.chmod(self.run_dir, 0o700)
        # Held while the run lives, so a later run can tell this folder is not stale.
        self._run_dir_lock = dirlock.acquire(self.run_dir)
        self._run_dir_lock.claim({"run_id": self.run_id})
        self.coordinator: _Child | None = None
        self.worker_procs: list[_Child] = []
        self._signals = 0
        self._first_signal = 0
        self._stop_sent_at: float | None = None

    def _python(self, module: str, *args: str) -> list[str]:
        # -P: the working directory is not put first on sys.path, so a msgpack.py there
        # cannot stand in for the dependency in the children.
        return [sys.executable, "-P", "-m", module, *args]

    def _spawn(self, name: str, argv: list[str], pass_fds: tuple[int, ...] = (),
               stdin: int | None = None) -> _Child:
        # Children start with SIGINT/SIGTERM blocked (inherited mask); each unblocks itself
        # by exec: the mask is reset in the child before exec below.
        proc = subprocess.Popen(argv, pass_fds=pass_fds, stdin=stdin,
                                preexec_fn=child_setup)
        return _Child(name, proc)

    def start(self) -> int | None:
        """Start the coordinator, wait for it to be ready, start the workers."""
        removed = shm.remove_stale()
        if removed:
            log.info("removed %d shared-memory segments left by earlier runs", len(removed),
                     extra={"event": "cleanup", "segments": len(removed)})
        folders = remove_stale_run_dirs()
        if folders:
            log.info("removed %d run folders left by earlier runs", len(folders),
                     extra={"event": "cleanup", "run_folders": len(folders)})
        s = self.settings
        read_fd, write_fd = os.pipe()
        common = child_arguments(s, self.run_id, self.run_dir, self.workers)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            args = [*common, "--ready-fd", str(write_fd)]
            if self.fresh and self.restarts == 0:
                args.append("--fresh")
            args += ["--restarts", str(self.restarts)]
            self.coordinator = self._spawn("coordinator", self._python("coordinator", *args),
                                           pass_fds=(write_fd,))
            os.close(write_fd)
            ring_span = self._await_ready(read_fd)
            if ring_span is None:
                assert self.coordinator is not None
                return self.coordinator.proc.wait()
            for w in range(self.workers):
                argv = self._python("workers", *common, "--worker", str(w),
                                    "--parent", str(os.getpid()),
                                    "--ring-span", ring_span)
                self.worker_procs.append(
                    self._spawn(f"worker {w}", argv, stdin=subprocess.DEVNULL))
        finally:
            os.close(read_fd)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        started = {"run_id": self.run_id, "coordinator_pid": self.coordinator.proc.pid,
                   "workers": len(self.worker_procs),
                   "worker_pids": ", ".join(str(c.proc.pid) for c in self.worker_procs)
                   or "in-process"}
        log.info("run %(run_id)s: coordinator pid %(coordinator_pid)d, %(workers)d workers "
                 "(%(worker_pids)s)", started, extra={"event": "start", **started})
        return None

    def _await_ready(self, fd: int) -> str | None:
        assert self.coordinator is not None
        deadline = time.monotonic() + READY_TIMEOUT
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                chunk = os.read(fd, 256)
                if not chunk:
                    return None  # coordinator exited before it was ready (config error)
                buf += chunk
                if buf.endswith(b"\n"):
                    return buf.decode().split()[1]
            elif self.coordinator.proc.poll() is not None:
                return None
        log.error("coordinator not ready after %.0f s", READY_TIMEOUT,
                  extra={"event": "not_ready", "timeout_s": READY_TIMEOUT})
        self.coordinator.proc.kill()
        return None

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        if self._signals == 1:
            self._first_signal = signum
            name = signal.Signals(signum).name
            log.info("%s: stopping (again to kill)", name,
                     extra={"event": "stop_requested", "signal": name})
            self._ask_stop()
        else:
            self.kill_all()

    def _ask_stop(self) -> None:
        self._stop_sent_at = time.monotonic()
        if self.coordinator and self.coordinator.proc.poll() is None:
            self.coordinator.proc.send_signal(signal.SIGTERM)

    def kill_all(self) -> None:
        """SIGKILL every child still running."""
        for child in self._children():
            if child.proc.poll() is None:
                child.proc.kill()

    def _children(self) -> list[_Child]:
        return ([self.coordinator] if self.coordinator else []) + self.worker_procs

    def watch(self) -> int:
        """Wait for the run to end; return the exit code of the whole run."""
        assert self.coordinator is not None
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        coord = self.coordinator.proc
        while True:
            rc = coord.poll()
            if rc is not None:
                if rc < 0 and not self._signals:
                    self._drain_workers(clean=False)
                    return self._died(self.coordinator, rc)
                self._drain_workers(clean=rc == 0)
                if self._signals and rc != 0:
                    return 128 + self._first_signal
                # A stop that came after the input ended changes nothing: the run is done.
                return rc
            for child in self.worker_procs:
                wrc = child.proc.poll()
                if wrc is not None and wrc != 0 and self._stop_sent_at is None:
                    return self._died(child, wrc)
            if self._stop_sent_at is not None and \
                    time.monotonic() - self._stop_sent_at > STOP_GRACE:
                log.error("children still running %.0f s after stop: killing them", STOP_GRACE,
                          extra={"event": "kill", "grace_s": STOP_GRACE})
                self.kill_all()
            time.sleep(0.05)

    def _died(self, child: _Child, code: int) -> int:
        """A process died: restart everything from the last checkpoint, or stop."""
        can_restart = (self.settings.checkpoint_dir is not None
                       and self.restarts < self.settings.max_restarts)
        action = (f"restarting from the last checkpoint (restart {self.restarts + 1} of "
                  f"{self.settings.max_restarts})" if can_restart else "stopping the run")
        died = {"process": child.name, "pid": child.proc.pid, "exit": describe_exit(code),
                "action": action}
        # "process" names a LogRecord attribute: the field goes as "process_" (see cluster.logs).
        log.error("%(process)s (pid %(pid)d) died: %(exit)s; %(action)s", died,
                  extra={"event": "restart" if can_restart else "died", "process_": child.name,
                         "pid": died["pid"], "exit": died["exit"], "action": action})
        self.kill_all()
        self._wait_all(STOP_GRACE)
        if not can_restart:
            return exits.WORKER_DIED
        self.restarts += 1
        self.coordinator = None
        self.worker_procs = []
        shm.unlink_run(self.run_id)
        rc = self.start()
        if rc is not None:
            return rc
        return self.watch()

    def _wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in self._children():
            left = max(0.0, deadline - time.monotonic())
            try:
                child.proc.wait(left)
            except subprocess.TimeoutExpired:
                pass

    def _drain_workers(self, clean: bool) -> None:
        # After a clean finish workers exit by themselves right after their last report.
        if not clean:
            for child in self.worker_procs:
                if child.proc.poll() is None:
                    child.proc.terminate()
        self._wait_all(STOP_GRACE if clean else 1.0)
        self.kill_all()
        for child in self.worker_procs:
            child.proc.wait()

    def cleanup(self) -> None:
        """Kill what is left, remove shared memory and the run directory."""
        self.kill_all()
        for child in self._children():
            try:
                child.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        shm.unlink_run(self.run_id)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._run_dir_lock.release()


def remove_stale_run_dirs() -> list[Path]:
    """Remove the per-run folders of runs that are gone (killed with SIGKILL, say).

    A live run holds the lock of its folder; a folder of an older version without a
    lock file is stale when the pid in its name is no longer alive.
    """
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        try:
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if (folder / dirlock.LOCK_NAME).exists():
            stale = dirlock.is_free(folder)
        else:
            pid = folder.name[len(RUN_DIR_PREFIX):].split(".", 1)[0]
            stale = pid.isdigit() and not shm.pid_alive(int(pid))
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def lock_folders(settings: ClusterSettings) -> list[dirlock.DirLock]:
    """Lock the output and checkpoint folders for this run, or refuse to start.

    Refused, with nothing touched: another live run holds a folder, a folder cannot be
    written, or the output folder holds the results of another config.
    """
    owner = {"config": str(settings.config_path.resolve()), "pipeline": settings.pipeline_id,
             "pipeline_class": settings.pipeline}
    wait = PARTITION_LOCK_WAIT if settings.partition is not None else 0.0
    locks = [dirlock.acquire(settings.output_dir, wait)]
    try:
        # Another config of the same pipeline (other workers, say) continues the same job;
        # another pipeline would write over its results (dead letters, summary...).
        before = locks[0].previous
        mine = (owner["pipeline"], owner["pipeline_class"])
        theirs = (before.get("pipeline"), before.get("pipeline_class"))
        if before.get("pipeline") and theirs != mine and _has_results(settings.output_dir):
            raise StartRefused(
                f"{settings.output_dir} holds the results of pipeline {theirs[0]} "
                f"({theirs[1]}, config {before.get('config', '?')}), not {mine[0]} ({mine[1]}); "
                f"choose another output_dir, or delete {settings.output_dir / dirlock.LOCK_NAME} "
                "to let this pipeline replace them")
        cp = settings.checkpoint_dir
        if cp is not None and cp.resolve() != settings.output_dir.resolve():
            locks.append(dirlock.acquire(cp, wait, mode=0o700))
        for held in locks:
            held.claim(owner)
    except BaseException:
        for held in locks:
            held.release()
        raise
    return locks


def _has_results(folder: Path) -> bool:
    return (folder / "summary.json").exists() or any(folder.glob("*.jsonl"))


def run(settings: ClusterSettings, in_process: bool = False, fresh: bool = False) -> int:
    """Run a cluster to completion; the exit code of ``bspump-cluster run``."""
    locks = lock_folders(settings)
    try:
        sup = Supervisor(settings, in_process=in_process, fresh=fresh)
        try:
            rc = sup.start()
            if rc is not None:
                return rc
            return sup.watch()
        finally:
            sup.cleanup()
    finally:
        for held in locks:
            held.release()
