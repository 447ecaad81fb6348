"""A real worker process (``python -m workers``) against the coordinator's ZeroMQ
transport in this test process: hello, data, acks, printed lines, the end, refusals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from cluster import wire
from coordinator.transport import ZmqTransport
from tests.test_workers.conftest import T0, settings_in


@pytest.fixture
def worker(tmp_path: Path, run_ids):
    """Start worker 0 of 1 on the test pipeline; its transport; killed and cleaned after."""
    run_dir = tmp_path / "r"
    run_dir.mkdir(mode=0o700)
    started: list[subprocess.Popen[str]] = []
    transports: list[ZmqTransport] = []

    def start(extra: str = "", parent: int | None = None) -> tuple[subprocess.Popen[str],
                                                                   ZmqTransport]:
        settings = settings_in(tmp_path)
        settings.config_path.write_text(settings.config_path.read_text() + extra)
        transports.append(ZmqTransport(str(run_dir), 1))
        started.append(subprocess.Popen(
            [sys.executable, "-m", "workers", "--config", str(settings.config_path),
             "--worker", "0", "--workers", "1", "--run-id", run_ids(), "--run-dir",
             str(run_dir), "--output-dir", str(tmp_path / "out"),
             "--parent", str(parent or os.getpid()), "--ring-span", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return started[-1], transports[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    for t in transports:
        t.close()


async def recv(transport: ZmqTransport) -> wire.Up:
    return await asyncio.wait_for(transport.recv(), 30)


def test_a_worker_says_hello_answers_and_ends(worker) -> None:
    proc, transport = worker()

    async def talk() -> list[wire.Up]:
        got = [await recv(transport)]  # hello
        events = [{"user": "a", "type": "x", "t": T0 + 1, "say": "hi"},
                  {"user": "b", "type": "x", "t": T0 + 2}]
        await transport.send(0, wire.Data([T0 + 1, T0 + 2], events))
        await transport.send(0, wire.Watermark(1, T0 + 60))
        got.append(await recv(transport))  # the printed line, before the ack
        got.append(await recv(transport))
        await transport.send(0, wire.End(2, T0 + 2, None))
        got.append(await recv(transport))
        return got

    hello, output, ack, done = asyncio.run(talk())
    assert isinstance(hello, wire.Hello)
    assert (hello.worker, hello.pid, hello.version) == (0, proc.pid, wire.VERSION)
    assert "WorkerPipeline.Counter.windows" in hello.segments
    assert output == wire.Output(0, "said hi\n")
    assert isinstance(ack, wire.Ack)
    assert (ack.worker, ack.seq, ack.watermark) == (0, 1, T0 + 60)
    assert ack.report.analyzers["Counter"].keys == ["x"]
    assert ack.report.events_in == 2
    assert isinstance(done, wire.Done) and (done.worker, done.seq) == (0, 2)
    assert [s[0] for s in done.report.analyzers["Sessions"].ended] == ["a", "b"]
    assert proc.wait(30) == 0


def test_a_worker_that_cannot_build_its_pipeline_says_why(worker) -> None:
    proc, transport = worker("\n[pipeline:WorkerPipeline:Counter]\nno_such_key = 1\n")
    failed = asyncio.run(recv(transport))
    assert isinstance(failed, wire.Failed) and failed.worker == 0
    assert "no_such_key" in failed.message
    assert proc.wait(30) == 1


def test_a_malformed_message_stops_the_worker_naming_the_field(worker) -> None:
    proc, transport = worker()

    async def talk() -> wire.Up:
        await recv(transport)  # hello
        # A watermark whose time is text: what no coordinator of this version sends.
        await transport.down[0].send(msgpack.packb([wire.WATERMARK, 1, "late"]))
        return await recv(transport)

    failed = asyncio.run(talk())
    assert failed == wire.Failed(0, 'WATERMARK: field "watermark" must be a number, '
                                    "got string")
    assert proc.wait(30) == 1


def test_a_worker_whose_supervisor_is_gone_exits_at_once(worker) -> None:
    proc, _ = worker(parent=1)  # not its parent: the supervisor it names has died
    assert proc.wait(30) == 1
