"""A host in a Kafka consumer group when ``[cluster] tasks = partition``.

A Kafka partition is the unit of state. Every partition assigned to this host runs
as its own *partition task*: ``bspump-cluster run CONFIG --partition TOPIC:N``, a
coordinator and its workers reading only that partition, with its own event time,
its results in ``<output_dir>/<topic>-<N>/`` and its checkpoints in
``<checkpoint_dir>/<topic>-<N>/``. When both folders are on storage every host
mounts, a partition's state and results move with the partition.

The member itself joins the group and reads no records (its partitions stay paused).
It:

- starts a task for every partition it is assigned. The task resumes from the newest
  complete checkpoint of its partition, whichever host wrote it, cuts the
  partition's result files back to that checkpoint and reads on from its offset;
- on a rebalance, stops every task before the group goes on (each writes a final
  checkpoint), so the next owner of a partition starts from its newest state. A host
  that dies writes nothing more: its partitions resume from their last checkpoint,
  and the result lines written after it are cut off and written again;
- commits, for each partition it owns, the offset of the partition's newest complete
  checkpoint (tasks never commit: only group members may);
- with the source's ``stop_at_end``, ends once every partition of its topics is
  committed at its end offset and its own tasks are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bspump.application import ROLE_COORDINATOR, RunInfo
from bspump.kafka import KafkaSource, client_options, start_consumer
from cluster import checkpoint, exits, httpd
from cluster.config import ClusterSettings, load_cluster_settings, partition_folder
from cluster.errors import StartRefused
from cluster.exits import describe_exit
from cluster.loader import load_pipeline
from cluster.logs import MEMBER_ENV, TASK_ENV
from cluster.prometheus import Exposition
from cluster.supervisor import child_setup

log = logging.getLogger("bspump-cluster.member")

TASK_STOP_TIMEOUT = 10.0  # a task's final checkpoint (3 s) and its supervisor's grace (4 s)
COMMIT_EVERY = 1.0
REPORT_EVERY = 30.0  # a log line with this host's partitions' figures
REFRESH_EVERY = 5.0  # re-read the partitions' checkpoints and end offsets


@dataclass
class Task:
    """One partition task: its process, its checkpoints, the offset committed for it."""

    partition: str
    proc: subprocess.Popen[bytes]
    checkpoint_dir: Path
    committed: int | None = None
    stopping: bool = False


_FOLDER = re.compile(r"^(?P<topic>.+)-(?P<number>\d+)$")


def partition_checkpoint_dirs(settings: ClusterSettings) -> dict[str, Path]:
    """``topic:N`` -> checkpoint folder of every partition that has one in the shared location."""
    found: dict[str, Path] = {}
    shared = settings.checkpoint_dir_set and settings.checkpoint_dir is not None
    root = settings.checkpoint_dir if shared else settings.output_dir
    assert root is not None
    if not root.is_dir():
        return found
    for folder in sorted(root.iterdir()):
        m = _FOLDER.match(folder.name)
        if m is None or not folder.is_dir():
            continue
        cp_dir = folder if shared else folder / "checkpoints"
        if cp_dir.is_dir():
            found[f"{m['topic']}:{m['number']}"] = cp_dir
    return found


def _offset(position: Any, partition: str) -> Any:
    """A partition's offset in a manifest's position (offsets by partition), or None."""
    return position.get(partition) if isinstance(position, dict) else None


def partition_status(partition: str, cp_dir: Path, now: float | None = None) -> dict[str, Any]:
    """One partition's figures from its two newest complete checkpoints."""
    now = time.time() if now is None else now
    manifests = checkpoint.complete_manifests(cp_dir, 2)
    row: dict[str, Any] = {"partition": partition, "checkpoint_id": None}
    if not manifests:
        return row
    m = manifests[0]
    c = m.counters
    watermark = m.intake.watermark
    row.update({
        "checkpoint_id": m.id, "owner": m.owner,
        "finished": m.finished,
        "offset": _offset(m.position, partition),
        "records_read": c.records_read, "events_processed": c.events_processed,
        "dead_letters": c.dead, "late_events": c.late,
        "watermark": watermark if math.isfinite(watermark) else None,
        "checkpoint_age_s": round(now - (now if m.created is None else m.created), 3),
        "records_per_s": None,
    })
    if len(manifests) == 2:
        old = manifests[1]
        dt = (m.created or 0) - (old.created or 0)
        if dt > 0:
            read = c.records_read - old.counters.records_read
            row["records_per_s"] = round(read / dt, 1)
    return row


class Member:
    """Holds this host's place in the consumer group and runs its partition tasks."""

    def __init__(self, settings: ClusterSettings, in_process: bool = False) -> None:
        self.settings = settings
        self.in_process = in_process
        run = RunInfo(role=ROLE_COORDINATOR, run_id=f"{os.getpid()}.member",
                      output_dir=settings.output_dir)
        _, pipeline = load_pipeline(settings, run)
        source = pipeline.Source
        if not isinstance(source, KafkaSource):
            raise settings.config.error(
                "cluster", "tasks", f"tasks = partition needs a KafkaSource; pipeline "
                f"{pipeline.Id} reads from {type(source).__name__}")
        self.source = source
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.tasks: dict[str, Task] = {}
        self.consumer: Any = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._failed: str | None = None
        self.rows: list[dict[str, Any]] = []
        self.state = "joining"
        self.started = time.monotonic()
        self.rebalances = 0
        self.tasks_started = 0

    # -- tasks ---------------------------------------------------------------------------

    def _task_dirs(self, partition: str) -> tuple[Path, Path]:
        out = self.settings.output_dir / partition_folder(partition)
        task = load_cluster_settings(self.settings.config, self.settings.config_path,
                                     workers=self.settings.workers, output_dir=str(out),
                                     partition=partition)
        assert task.checkpoint_dir is not None
        return out, task.checkpoint_dir

    def _start_task(self, partition: str) -> None:
        out, cp_dir = self._task_dirs(partition)
        # -P: the working directory does not come before the installed packages.
        argv = [sys.executable, "-P", "-m", "cluster", "run", str(self.settings.config_path),
                "--partition", partition, "--output-dir", str(out),
                "--workers", str(self.settings.workers)]
        if self.in_process:
            argv.append("--in-process")
        env = {**os.environ, MEMBER_ENV: self.name, TASK_ENV: partition}
        # Own session: a Ctrl-C on the terminal reaches the member, which stops each task
        # once; the task still dies with the member (PDEATHSIG).
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                preexec_fn=child_setup, start_new_session=True)
        self.tasks[partition] = Task(partition, proc, cp_dir)
        self.tasks_started += 1

    async def start_tasks(self, partitions: list[str]) -> None:
        """A task for each newly assigned partition."""
        if self._stop.is_set():
            return  # leaving the group: the partitions go to the others
        async with self._lock:
            for p in partitions:
                if p not in self.tasks:
                    self._start_task(p)
        if partitions:
            log.info("member %s: partitions %s; tasks started (pids %s)", self.name,
                     ", ".join(partitions),
                     ", ".join(str(self.tasks[p].proc.pid) for p in partitions))

    async def stop_tasks(self, why: str) -> None:
        """Stop every task (each writes a final checkpoint) and wait until they are gone."""
        async with self._lock:
            running = [t for t in self.tasks.values() if t.proc.poll() is None]
            if running:
                log.info("%s: stopping the tasks of %s", why,
                         ", ".join(t.partition for t in running))
            for t in running:
                t.stopping = True
                t.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + TASK_STOP_TIMEOUT
            while any(t.proc.poll() is None for t in running):
                if time.monotonic() > deadline:
                    for t in running:
                        if t.proc.poll() is None:
                            log.error("task of %s still running %.0f s after stop: killing it",
                                      t.partition, TASK_STOP_TIMEOUT)
                            t.proc.kill()
                    break
                await asyncio.sleep(0.05)
            for t in running:
                t.proc.wait()
            await self.commit()
            self.tasks.clear()

    def _reap(self) -> None:
        """Note tasks that ended by themselves: finished (0) or failed."""
        for t in self.tasks.values():
            rc = t.proc.poll()
            if rc is None or t.stopping or rc == exits.OK:
                continue
            self._failed = (f"task of partition {t.partition} (pid {t.proc.pid}) ended: "
                            f"{describe_exit(rc)}")
            self._stop.set()

    def running(self) -> bool:
        """Whether any task is still running."""
        return any(t.proc.poll() is None for t in self.tasks.values())

    # -- offsets ---------------------------------------------------------------------------

    async def commit(self) -> None:
        """Commit each owned partition's offset from its newest complete checkpoint."""
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError
        from aiokafka.structs import OffsetAndMetadata

        consumer = self.consumer
        if consumer is None:
            return
        offsets = {}
        for t in self.tasks.values():
            manifests = checkpoint.complete_manifests(t.checkpoint_dir, 1)
            if not manifests:
                continue
            position = _offset(manifests[0].position, t.partition)
            if position is None or position == t.committed:
                continue
            topic, _, number = t.partition.rpartition(":")
            offsets[t.partition] = (TopicPartition(topic, int(number)), int(position))
        if not offsets:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(pos, "")
                                   for tp, pos in offsets.values()})
        except KafkaError as e:
            log.warning("offsets not committed this time (%s)", e)
            return
        for partition, (_, pos) in offsets.items():
            if partition in self.tasks:
                self.tasks[partition].committed = pos

    async def all_at_end(self) -> bool:
        """Whether every partition of the source's topics is committed at its end offset."""
        from aiokafka import TopicPartition

        consumer = self.consumer
        tps = []
        for topic in self.source.topics:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                return False
            tps += [TopicPartition(topic, p) for p in parts]
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            committed = await consumer.committed(tp)
            if ends[tp] > 0 and (committed is None or committed < ends[tp]):
                return False
        return True

    async def refresh(self) -> None:
        """Re-read this host's partitions' newest checkpoints and how far each is behind."""
        from aiokafka import TopicPartition

        rows = [partition_status(t.partition, t.checkpoint_dir) for t in self.tasks.values()]
        for row in rows:
            row["task_pid"] = self.tasks[row["partition"]].proc.pid
            row["lag"] = None
        try:
            tps = {}
            for row in rows:
                topic, _, number = row["partition"].rpartition(":")
                tps[row["partition"]] = TopicPartition(topic, int(number))
            ends = await self.consumer.end_offsets(list(tps.values())) if tps else {}
            for row in rows:
                end = ends.get(tps[row["partition"]])
                if end is not None:
                    row["lag"] = max(0, int(end) - (row.get("offset") or 0))
        except Exception:
            pass  # figures only: the broker may be away right now
        self.rows = rows

    def report(self) -> None:
        """Log this host's partitions: records read and rate, lag, dead and late events."""
        rows = [r for r in self.rows if r["checkpoint_id"] is not None]
        if not rows:
            return
        lags = [r["lag"] for r in rows if r["lag"] is not None]
        rate = sum(r["records_per_s"] or 0 for r in rows if not r["finished"])
        log.info("partitions %s: %s records read (%s/s), %s behind the end, %s dead letters, "
                 "%s late; checkpoints %s s old", ", ".join(r["partition"] for r in rows),
                 f"{sum(r['records_read'] or 0 for r in rows):,}", f"{rate:,.0f}",
                 f"{sum(lags):,}" if lags else "-",
                 f"{sum(r['dead_letters'] or 0 for r in rows):,}",
                 f"{sum(r['late_events'] or 0 for r in rows):,}",
                 f"{max(r['checkpoint_age_s'] for r in rows):.0f}")

    def snapshot(self) -> dict[str, Any]:
        """This host's figures, for ``/api/snapshot`` and ``/metrics``."""
        return {"member": self.name, "group": self.source.Config["group_id"],
                "topics": list(self.source.topics), "pipeline": self.settings.pipeline_id,
                "state": self.state, "uptime_s": round(time.monotonic() - self.started, 3),
                "rebalances": self.rebalances, "tasks_started": self.tasks_started,
                "partitions": [dict(r) for r in self.rows]}

    def routes(self) -> httpd.Routes:
        """What a member serves: its figures as Prometheus text and as JSON."""
        return {
            "/metrics": lambda: (render_metrics(self.snapshot()).encode(),
                                 httpd.PROMETHEUS_TEXT),
            "/api/snapshot": lambda: (json.dumps(self.snapshot()).encode(),
                                      "application/json"),
        }

    # -- the group ---------------------------------------------------------------------------

    async def _join(self) -> Any:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.abc import ConsumerRebalanceListener

        member = self

        class _Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                member.state = "rebalancing"
                await member.stop_tasks("rebalance")

            async def on_partitions_assigned(self, assigned: Any) -> None:
                member.rebalances += 1
                member.state = "running"
                if assigned:
                    member.consumer.pause(*assigned)
                await member.start_tasks(sorted(f"{tp.topic}:{tp.partition}"
                                                for tp in assigned))

        settings = self.source.connection_config

        def make() -> Any:
            consumer = AIOKafkaConsumer(**client_options(settings),
                                        **self.source.group_options())
            consumer.subscribe(self.source.topics, listener=_Listener())
            self.consumer = consumer
            return consumer

        return await start_consumer(make, settings["bootstrap_servers"])

    async def run(self) -> int:
        """Be a group member until the end (stop_at_end), a signal, or a failed task."""
        from aiokafka.errors import KafkaError

        loop = asyncio.get_running_loop()
        signalled: list[int] = []

        def on_signal(signum: int) -> None:
            signalled.append(signum)
            self._stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        log.info("member %s: joining group %s for %s (one task per partition)", self.name,
                 self.source.Config["group_id"], ", ".join(self.source.topics))
        server = None
        if self.settings.http is not None:
            host, port = self.settings.http
            try:
                server = await httpd.serve(self.routes(), host, port)
            except OSError as e:
                raise StartRefused(f"cannot serve http on {host}:{port} "
                                   f"({self.settings.config.where('cluster', 'http')}): "
                                   f"{e.strerror or e}") from None
            log.info("member metrics on http://%s:%d/metrics", host, server.port)
        joining = asyncio.ensure_future(self._join())
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({joining, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not joining.done():  # stopped while no broker answered
            joining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await joining
            if server is not None:
                await server.close()
            return 128 + signalled[0] if signalled else exits.FAILED
        consumer = joining.result()
        stop_at_end = bool(self.source.Config["stop_at_end"])
        committed_at = reported_at = refreshed_at = time.monotonic()
        rc = exits.OK
        try:
            while not self._stop.is_set():
                try:
                    await consumer.getmany(timeout_ms=500)  # paused: keeps us in the group
                except KafkaError as e:
                    log.warning("Kafka: %s", e)
                    await asyncio.sleep(1.0)
                self._reap()
                if time.monotonic() - committed_at >= COMMIT_EVERY:
                    await self.commit()
                    committed_at = time.monotonic()
                if time.monotonic() - refreshed_at >= REFRESH_EVERY:
                    await self.refresh()
                    refreshed_at = time.monotonic()
                if self.settings.progress != "no" and \
                        time.monotonic() - reported_at >= REPORT_EVERY:
                    self.report()
                    reported_at = time.monotonic()
                if stop_at_end and not self.running():
                    await self.commit()
                    with contextlib.suppress(KafkaError):
                        if await self.all_at_end():
                            log.info("every partition of %s is at its end",
                                     ", ".join(self.source.topics))
                            break
            if self._failed is not None:
                log.error("%s; stopping this member", self._failed)
                rc = exits.FAILED
            elif signalled:
                rc = 128 + signalled[0]
        finally:
            self.state = "stopping"
            await self.stop_tasks("stopping")
            await consumer.stop()  # leave the group: the others rebalance at once
            if server is not None:
                await server.close()
        return rc


_PARTITION_METRICS = [  # name, type, row key, help
    ("partition_records_read_total", "counter", "records_read",
     "Records read from the partition, as of its newest checkpoint."),
    ("partition_offset", "gauge", "offset", "Offset of the partition's newest checkpoint."),
    ("partition_lag", "gauge", "lag",
     "Messages between the newest checkpoint's offset and the partition's end."),
    ("partition_dead_letters_total", "counter", "dead_letters",
     "Dead letters of the partition, as of its newest checkpoint."),
    ("partition_late_events_total", "counter", "late_events",
     "Late events of the partition, as of its newest checkpoint."),
    ("partition_watermark_seconds", "gauge", "watermark",
     "The partition's watermark at its newest checkpoint (epoch seconds)."),
    ("partition_checkpoint_age_seconds", "gauge", "checkpoint_age_s",
     "Seconds since the partition's newest checkpoint (when last read)."),
    ("partition_finished", "gauge", "finished",
     "1 when the partition's task reached its end (stop_at_end)."),
]


def render_metrics(snap: dict[str, Any]) -> str:
    """A member's snapshot in the Prometheus text format."""
    t = Exposition(pipeline=snap["pipeline"], member=snap["member"])
    rows = snap["partitions"]
    t.metric("member_info", "gauge", "Always 1; the group and state are its labels.",
             [({"group": snap["group"], "state": snap["state"]}, 1)])
    t.metric("member_partitions", "gauge", "Partitions this host owns.", [({}, len(rows))])
    t.metric("member_rebalances_total", "counter", "Partition assignments this host received.",
             [({}, snap["rebalances"])])
    t.metric("member_tasks_started_total", "counter", "Partition tasks this host started.",
             [({}, snap["tasks_started"])])

    def each(key: str) -> list[tuple[dict[str, Any], float | None]]:
        samples = []
        for r in rows:
            topic, _, number = r["partition"].rpartition(":")
            value = r.get(key)
            samples.append(({"topic": topic, "partition": number},
                             float(value) if isinstance(value, bool) else value))
        return samples

    for name, kind, key, help_text in _PARTITION_METRICS:
        t.metric(name, kind, help_text, each(key))
    return t.text()


def run(settings: ClusterSettings, in_process: bool = False) -> int:
    """``bspump-cluster run`` with ``tasks = partition``: this host's group member."""
    member = Member(settings, in_process=in_process)
    return asyncio.run(member.run())
