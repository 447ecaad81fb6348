"""The coordinator's side of what workers say: a worker must speak the same wire version,
and a message must come from a worker of the run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster import wire
from cluster.errors import ContractError, WorkerDied
from tests.test_coordinator.test_fence import _coordinator


class _Hellos:
    """A transport whose workers said these messages (the coordinator's side only)."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages
        self.workers = 1

    async def recv(self) -> wire.Up:
        return wire.unpack_up(self.messages.pop(0))


def test_a_worker_of_another_protocol_version_is_refused(seed_config, tmp_path: Path) -> None:
    coord = _coordinator(seed_config, tmp_path, None)
    hello = wire.Hello(0, 4242, {}, wire.VERSION + 1)
    with pytest.raises(WorkerDied, match=f"worker 0 speaks wire protocol version "
                                         f"{wire.VERSION + 1}, this coordinator "
                                         f"{wire.VERSION}"):
        asyncio.run(coord._await_hellos(_Hellos([wire.pack(hello)])))  # type: ignore[arg-type]


def test_a_message_naming_a_worker_outside_the_run_is_refused(seed_config,
                                                              tmp_path: Path) -> None:
    coord = _coordinator(seed_config, tmp_path, None)  # one worker: worker 0
    stray = wire.Heartbeat(3, 10)
    with pytest.raises(ContractError,
                       match='HEARTBEAT: field "worker" is 3, not a worker of this run'):
        asyncio.run(coord._receive(_Hellos([wire.pack(stray)])))  # type: ignore[arg-type]
