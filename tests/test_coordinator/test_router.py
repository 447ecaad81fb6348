"""``coordinator.router``: which worker gets which records, in what order, and when."""

from __future__ import annotations

import asyncio
import json
import random
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

from cluster import wire
from coordinator.runtime import Coordinator
from tests.conftest import T0
from tests.test_coordinator.conftest import RecordingTransport

KEY_GROUPS = 64  # the seed config's


def owner(user: str, workers: int) -> int:
    """The worker a key belongs to, by the README's rule: crc32 of the key's bytes modulo
    key_groups gives the group; worker k of n owns the groups g with g * n // key_groups == k."""
    return (zlib.crc32(user.encode()) % KEY_GROUPS) * workers // KEY_GROUPS


def stream(n: int = 3000, seed: int = 3) -> list[dict[str, Any]]:
    """Events of 40 users over about 10 minutes of event time, slightly out of order."""
    rng = random.Random(seed)
    return [{"user_id": f"u{rng.randrange(40)}", "type": f"type{rng.randrange(3)}",
             "timestamp": round(T0 + i * 0.2 + rng.uniform(0, 5), 3)} for i in range(n)]


def route_all(coord: Coordinator, transport: RecordingTransport) -> None:
    async def go() -> None:
        source = coord.pipeline.Source
        assert source is not None
        async for batch in source.batches():
            await coord.router.route(transport, batch)
    asyncio.run(go())


def data_of(messages: list[wire.Down]) -> list[dict[str, Any]]:
    """The records in a worker's data messages, decoded as the worker would."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        if isinstance(msg, wire.DataRaw):
            out += [json.loads(raw) for raw in msg.lines]
        elif isinstance(msg, wire.Data):
            out += msg.events
    return out


def test_each_record_goes_to_the_worker_owning_its_key_once(
        make_coordinator: Callable[..., Coordinator]) -> None:
    events = stream()
    straggler = events[2000]
    straggler["timestamp"] = T0 - 1000  # far behind the watermark by then: late
    lines = [json.dumps(e) for e in events]
    lines[100] = lines[100][:20]  # malformed: a dead letter
    del events[100]
    coord = make_coordinator(lines, workers=3)
    transport = RecordingTransport(coord)
    route_all(coord, transport)

    routed = [data_of(transport.sent[w]) for w in range(3)]
    for w, records in enumerate(routed):
        assert records, f"worker {w} got nothing: the stream does not exercise 3 workers"
        assert {owner(r["user_id"], 3) for r in records} == {w}
    coord.outputs.flush()
    late = [json.loads(x)["record"] for x in
            (coord.outputs.dir / "late-events.jsonl").read_text().splitlines()]
    assert late == [straggler]
    got = Counter(json.dumps(r, sort_keys=True) for rs in routed for r in rs)
    got.update(json.dumps(r, sort_keys=True) for r in late)
    assert got == Counter(json.dumps(e, sort_keys=True) for e in events)
    c = coord.counts
    assert c.records_read == len(lines) and c.dead == c.dead_input == 1
    assert c.sent == [len(r) for r in routed]
    assert coord.router.position is not None


def test_a_watermark_follows_the_data_before_it_on_every_channel(
        make_coordinator: Callable[..., Coordinator]) -> None:
    coord = make_coordinator([json.dumps(e) for e in stream()], workers=2)
    transport = RecordingTransport(coord)
    route_all(coord, transport)
    marks = [[(m.seq, m.watermark) for m in transport.sent[w] if isinstance(m, wire.Watermark)]
             for w in range(2)]
    assert len(marks[0]) > 3, "the stream does not advance the watermark"
    assert marks[0] == marks[1], "every worker gets every watermark, same seq"
    assert [s for s, _ in marks[0]] == list(range(1, len(marks[0]) + 1))
    assert [t for _, t in marks[0]] == sorted(t for _, t in marks[0])
    for w in range(2):
        watermark = float("-inf")
        for msg in transport.sent[w]:
            if isinstance(msg, wire.Watermark):
                watermark = msg.watermark
            for record in data_of([msg]):
                # Sent after a watermark: not behind it, or it would have been late.
                assert record["timestamp"] >= watermark
    assert coord.frontier.sent == marks[0][-1][1]


def test_data_waits_while_the_workers_lag_more_than_max_lag(
        make_coordinator: Callable[..., Coordinator]) -> None:
    coord = make_coordinator([json.dumps(e) for e in stream(200)], workers=2,
                             cluster="max_lag = 120")
    assert coord.timing.max_lag == 120
    transport = RecordingTransport(coord, ack=False)
    source = coord.pipeline.Source
    assert source is not None

    async def go() -> None:
        batches = [b async for b in source.batches()]
        # The workers have merged up to T0; a watermark 121 s further is out.
        coord.frontier.restore(T0)
        coord.frontier.sent = T0 + 121
        task = asyncio.create_task(coord.router.route(transport, batches[0]))
        await asyncio.sleep(0.2)
        assert not task.done() and not any(transport.sent), "sent while lagging"
        coord.frontier.merged = T0 + 1  # now 120 s ahead: at most max_lag
        coord.waiter.notify()
        await asyncio.wait_for(task, 5)
        assert any(transport.sent)

    asyncio.run(go())
