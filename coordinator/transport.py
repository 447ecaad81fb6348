"""Channels between the coordinator and its shards.

:class:`ZmqTransport` is the real thing: one PUSH socket per worker (an ordered
channel for data and control) and one PULL socket all workers report to, as
``ipc://`` endpoints in the run directory (mode 0700). :class:`LocalTransport`
runs one shard inside the coordinator's process, for the in-process topology.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import zmq
import zmq.asyncio

from cluster import wire

# Messages queued per worker before a send waits: bounds memory and gives backpressure.
SEND_HWM = 16


class Transport(Protocol):
    """What the coordinator needs from a channel to its shards."""

    workers: int

    async def send(self, worker: int, message: wire.Down) -> None:
        """Queue a message on one worker's ordered channel."""

    async def recv(self) -> wire.Up:
        """The next message from any worker (ContractError when it is malformed)."""

    def close(self) -> None:
        """Release sockets."""


class ZmqTransport:
    """ZeroMQ PUSH/PULL over ipc sockets in ``run_dir``."""

    def __init__(self, run_dir: str, workers: int) -> None:
        self.workers = workers
        self.ctx = zmq.asyncio.Context()
        self.down: list[zmq.asyncio.Socket] = []
        for w in range(workers):
            s = self.ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.SNDHWM, SEND_HWM)
            s.setsockopt(zmq.LINGER, 0)
            s.bind(f"ipc://{run_dir}/w{w}.ipc")
            self.down.append(s)
        self.up = self.ctx.socket(zmq.PULL)
        self.up.setsockopt(zmq.LINGER, 0)
        self.up.bind(f"ipc://{run_dir}/up.ipc")

    async def send(self, worker: int, message: wire.Down) -> None:
        """Queue a message; waits while the worker's queue is full."""
        # copy=True: zero-copy sends hand every frame to pyzmq's garbage-collector thread,
        # which costs more than copying messages of this size (measured: 12% of the
        # coordinator's time on the batch path).
        await self.down[worker].send(wire.pack(message), copy=True)

    async def recv(self) -> wire.Up:
        """The next message from any worker (ContractError when it is malformed)."""
        frame = await self.up.recv(copy=False)
        return wire.unpack_up(frame.buffer)

    def close(self) -> None:
        """Close every socket."""
        for s in [*self.down, self.up]:
            s.close(linger=0)
        self.ctx.term()


class LocalTransport:
    """One shard in this process: messages are handled as they are sent."""

    def __init__(self, shard: Any) -> None:
        self.workers = 1
        self.shard = shard
        self.inbox: asyncio.Queue[wire.Up] = asyncio.Queue()
        self.inbox.put_nowait(wire.unpack_up(wire.pack(shard.hello())))

    async def send(self, worker: int, message: wire.Down) -> None:
        """Handle the message right away; queue the reply."""
        # Round-trip through msgpack so the in-process run sees exactly what a worker sees.
        reply = self.shard.handle(wire.unpack_down(wire.pack(message)))
        if reply is not None:
            self.inbox.put_nowait(wire.unpack_up(wire.pack(reply)))
        await asyncio.sleep(0)

    async def recv(self) -> wire.Up:
        """The next reply."""
        return await self.inbox.get()

    def close(self) -> None:
        """Nothing to release."""
