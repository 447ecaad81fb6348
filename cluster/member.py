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

The tasks' processes are :mod:`cluster.partition_tasks`; the partitions' figures (from
their checkpoints) and their log line and metrics are :mod:`cluster.partition_figures`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from typing import Any

from bspump.application import ROLE_COORDINATOR, RunInfo
from bspump.kafka import KafkaSource, client_options, start_consumer
from cluster import checkpoint, exits, httpd
from cluster.config import ClusterSettings, parse_partition
from cluster.errors import StartRefused
from cluster.loader import load_pipeline
from cluster.partition_figures import (
    partition_checkpoint_dirs,
    partition_offset,
    partition_status,
    render_metrics,
    report,
)
from cluster.partition_tasks import TASK_STOP_TIMEOUT, PartitionTasks, Task
from cluster.records import partition_name

__all__ = ["TASK_STOP_TIMEOUT", "Member", "Task", "partition_checkpoint_dirs",
           "partition_status", "render_metrics", "run"]

log = logging.getLogger("bspump-cluster.member")

COMMIT_EVERY = 1.0
REPORT_EVERY = 30.0  # a log line with this host's partitions' figures
REFRESH_EVERY = 5.0  # re-read the partitions' checkpoints and end offsets


class Member:
    """Holds this host's place in the consumer group and runs its partition tasks."""

    def __init__(self, settings: ClusterSettings, in_process: bool = False) -> None:
        self.settings = settings
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
        self.tasks = PartitionTasks(settings, self.name, in_process)
        self.consumer: Any = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._failed: str | None = None
        self.rows: list[dict[str, Any]] = []
        self.state = "joining"
        self.started = time.monotonic()
        self.rebalances = 0

    # -- hand-over: tasks start on assignment, stop (and commit) on revocation -------------

    async def start_tasks(self, partitions: list[str]) -> None:
        """A task for each newly assigned partition."""
        if self._stop.is_set():
            return  # leaving the group: the partitions go to the others
        async with self._lock:
            for p in partitions:
                if p not in self.tasks:
                    self.tasks.start(p)
        if partitions:
            fields = {"member": self.name, "partitions": ", ".join(partitions),
                      "pids": ", ".join(str(self.tasks[p].proc.pid) for p in partitions)}
            log.info("member %(member)s: partitions %(partitions)s; tasks started "
                     "(pids %(pids)s)", fields, extra={"event": "tasks_started", **fields})

    async def stop_tasks(self, why: str) -> None:
        """Stop every task (each writes a final checkpoint), then commit their offsets."""
        async with self._lock:
            await self.tasks.stop(why)
            await self.commit()
            self.tasks.clear()

    def _reap(self) -> None:
        """Stop this member when a task ended by itself with an error."""
        failed = self.tasks.failure()
        if failed is not None:
            self._failed = failed
            self._stop.set()

    def running(self) -> bool:
        """Whether any task is still running."""
        return self.tasks.running()

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
        for t in self.tasks:
            manifests = checkpoint.complete_manifests(t.checkpoint_dir, 1)
            if not manifests:
                continue
            position = partition_offset(manifests[0].position, t.partition)
            if position is None or position == t.committed:
                continue
            offsets[t.partition] = (TopicPartition(*parse_partition(t.partition)),
                                    int(position))
        if not offsets:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(pos, "")
                                   for tp, pos in offsets.values()})
        except KafkaError as e:
            log.warning("offsets not committed this time (%s)", e,
                        extra={"event": "commit_failed", "error": str(e)})
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

        rows = [partition_status(t.partition, t.checkpoint_dir) for t in self.tasks]
        for row in rows:
            row["task_pid"] = self.tasks[row["partition"]].proc.pid
            row["lag"] = None
        try:
            tps: dict[str, Any] = {}
            for row in rows:
                tps[row["partition"]] = TopicPartition(*parse_partition(row["partition"]))
            ends = await self.consumer.end_offsets(list(tps.values())) if tps else {}
            for row in rows:
                end = ends.get(tps[row["partition"]])
                if end is not None:
                    row["lag"] = max(0, int(end) - (row.get("offset") or 0))
        except Exception:
            pass  # figures only: the broker may be away right now
        self.rows = rows

    # -- figures ---------------------------------------------------------------------------

    def report(self) -> None:
        """Log this host's partitions: records read and rate, lag, dead and late events."""
        report(self.rows)

    def snapshot(self) -> dict[str, Any]:
        """This host's figures, for ``/api/snapshot`` and ``/metrics``."""
        return {"member": self.name, "group": self.source.Config["group_id"],
                "topics": list(self.source.topics), "pipeline": self.settings.pipeline_id,
                "state": self.state, "uptime_s": round(time.monotonic() - self.started, 3),
                "rebalances": self.rebalances, "tasks_started": self.tasks.started,
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
                await member.start_tasks(sorted(partition_name(tp.topic, tp.partition)
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
        joining_group = {"member": self.name, "group": self.source.Config["group_id"],
                         "topics": ", ".join(self.source.topics)}
        log.info("member %(member)s: joining group %(group)s for %(topics)s (one task per "
                 "partition)", joining_group, extra={"event": "member_join", **joining_group})
        server = None
        if self.settings.http is not None:
            host, port = self.settings.http
            try:
                server = await httpd.serve(self.routes(), host, port)
            except OSError as e:
                raise StartRefused(f"cannot serve http on {host}:{port} "
                                   f"({self.settings.config.where('cluster', 'http')}): "
                                   f"{e.strerror or e}") from None
            log.info("member metrics on http://%s:%d/metrics", host, server.port,
                     extra={"event": "http", "host": host, "port": server.port})
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
                    log.warning("Kafka: %s", e, extra={"event": "kafka_error", "error": str(e)})
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
                            topics = ", ".join(self.source.topics)
                            log.info("every partition of %s is at its end", topics,
                                     extra={"event": "topics_at_end", "topics": topics})
                            break
            if self._failed is not None:
                log.error("%s; stopping this member", self._failed,
                          extra={"event": "task_failed", "problem": self._failed})
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


def run(settings: ClusterSettings, in_process: bool = False) -> int:
    """``bspump-cluster run`` with ``tasks = partition``: this host's group member."""
    member = Member(settings, in_process=in_process)
    return asyncio.run(member.run())
