"""The coordinator's channels to its workers: real ZeroMQ ipc sockets in one process,
the worker ends connected as a worker connects them (workers/runtime.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq

from cluster import wire
from coordinator.transport import SEND_HWM, ZmqTransport


class WorkerEnds:
    """Worker ``w``'s sockets: PULL from ``w<w>.ipc``, PUSH to ``up.ipc``."""

    def __init__(self, run_dir: Path, workers: int) -> None:
        self.ctx = zmq.Context()
        self.down = []
        for w in range(workers):
            s = self.ctx.socket(zmq.PULL)
            s.setsockopt(zmq.RCVHWM, 16)
            s.connect(f"ipc://{run_dir}/w{w}.ipc")
            self.down.append(s)
        self.up = self.ctx.socket(zmq.PUSH)
        self.up.connect(f"ipc://{run_dir}/up.ipc")

    def recv(self, worker: int, timeout_ms: int = 5000) -> wire.Down:
        assert self.down[worker].poll(timeout_ms), f"worker {worker} got nothing"
        return wire.unpack_down(self.down[worker].recv())

    def close(self) -> None:
        for s in [*self.down, self.up]:
            s.close(linger=0)
        self.ctx.term()


@pytest.fixture
def channels(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)

    def make(workers: int) -> tuple[ZmqTransport, WorkerEnds]:
        transport = ZmqTransport(str(run_dir), workers)
        made.append((transport, WorkerEnds(run_dir, workers)))
        return made[-1]

    made: list[tuple[ZmqTransport, WorkerEnds]] = []
    yield make
    for transport, ends in made:
        ends.close()
        transport.close()


def test_each_worker_gets_its_own_messages_in_order(channels) -> None:
    transport, ends = channels(3)

    async def send_all() -> None:
        for i in range(60):
            await transport.send(i % 3, wire.Watermark(i, float(i)))

    asyncio.run(send_all())
    for w in range(3):
        got = [ends.recv(w) for _ in range(20)]
        assert got == [wire.Watermark(i, float(i)) for i in range(w, 60, 3)]
        assert not ends.down[w].poll(50), "a message went to two workers"


def test_what_every_worker_sends_up_reaches_the_coordinator(channels) -> None:
    transport, ends = channels(2)
    sent = [wire.Heartbeat(w, n) for n in range(10) for w in range(2)]
    for message in sent:
        ends.up.send(wire.pack(message))

    async def receive() -> list[wire.Up]:
        return [await asyncio.wait_for(transport.recv(), 5) for _ in sent]

    got = asyncio.run(receive())
    assert sorted(map(wire.pack, got)) == sorted(map(wire.pack, sent))
    for w in range(2):  # one worker's messages keep their order
        assert [m for m in got if m.worker == w] == [m for m in sent if m.worker == w]


def test_sends_wait_while_a_worker_does_not_read_and_lose_nothing(channels) -> None:
    transport, ends = channels(1)
    events = [{"x": "y" * 1000}] * 100  # ~100 KB a message
    many = 4 * SEND_HWM + 200

    async def send(start: int, n: int) -> int:
        done = 0
        for i in range(start, start + n):
            # The message's number as its first event time.
            await transport.send(0, wire.Data([float(i)] + [0.0] * 99, events))
            done += 1
        return done

    async def stalled() -> None:
        await asyncio.wait_for(send(0, many), 2.0)

    # Nobody reads: the queues fill up and the next send waits (backpressure), where an
    # unbounded queue would have taken every message into memory.
    with pytest.raises(TimeoutError):
        asyncio.run(stalled())
    got = []
    while ends.down[0].poll(500):
        msg = wire.unpack_down(ends.down[0].recv())
        assert isinstance(msg, wire.Data)
        got.append(int(msg.times[0]))
    assert len(got) < many, "every send went through although nobody read"
    assert got == list(range(len(got))), "messages lost or reordered while waiting"
