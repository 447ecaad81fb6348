"""Waiting on the coordinator's loop: until a condition holds, a stop, or a failure.

The receiver task changes the state (acks, checkpoint acks, a worker done) and calls
:meth:`Waiter.notify`; whoever waits for that state re-checks its condition then. A
receiver that fails (a worker died) ends every wait with its error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Waiter:
    """Progress and stop events shared by the coordinator's pieces."""

    def __init__(self) -> None:
        self.progress = asyncio.Event()
        self.stop = asyncio.Event()
        self.failure: BaseException | None = None

    def notify(self) -> None:
        """Something a wait may be waiting for changed."""
        self.progress.set()

    def fail(self, error: BaseException) -> None:
        """End every wait with ``error`` (the receiver failed)."""
        self.failure = error
        self.progress.set()

    async def until(self, ready: Callable[[], bool], stoppable: bool = True) -> None:
        """Wait until ``ready()`` holds; a failed receiver ends the wait with its error.

        A stop ends a stoppable wait with :class:`asyncio.CancelledError`; an unstoppable
        one (a checkpoint barrier, flow control inside a batch) goes on to its end.
        """
        while not ready():
            if self.failure is not None:
                raise self.failure
            if stoppable and self.stop.is_set():
                raise asyncio.CancelledError
            self.progress.clear()
            waiters = {asyncio.create_task(self.progress.wait())}
            if stoppable:
                waiters.add(asyncio.create_task(self.stop.wait()))
            _, pending = await asyncio.wait(waiters, timeout=1.0,
                                            return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
