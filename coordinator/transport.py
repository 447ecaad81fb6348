"""Channels between the coordinator and its shards.

:class:`ZmqTransport` is the real thing: one PUSH socket per worker (an ordered
channel for data and control) and one PULL socket all workers report to, as
``ipc://`` endpoints in the run directory (mode 0700). :class:`Transport` is what
the coordinator's pieces need of it, so a unit test can hand them a recording fake.
"""

from __future__ import annotations

from typing import Protocol

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
