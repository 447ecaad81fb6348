"""The worker's answers to the coordinator's messages: ShardRuntime.handle, fed real
messages (through the wire format) on a real pipeline with shared-memory windows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from bspump.batch import EventBatch
from cluster import wire
from cluster.errors import ContractError
from cluster.shm import Segment
from tests.test_workers.conftest import T0, settings_in, shard_run
from workers.runtime import ShardRuntime

EVENTS = [{"user": "a", "type": "x", "t": T0 + 1}, {"user": "b", "type": "x", "t": T0 + 2},
          {"user": "a", "type": "y", "t": T0 + 30}, {"user": "b", "type": "x", "t": T0 + 61}]
PERIOD = int(T0 // 60)


def send(shard: ShardRuntime, message: wire.Down) -> Any:
    """One message as a worker gets it (packed, unpacked); its reply as sent back."""
    reply = shard.handle(wire.unpack_down(wire.pack(message)))
    return None if reply is None else wire.unpack_up(wire.pack(reply))


def data(events: list[dict[str, Any]]) -> wire.Data:
    return wire.Data([e["t"] for e in events], events)


def window_counts(shard: ShardRuntime, hello: wire.Hello, closed: list[tuple[int, int]],
                  keys: list[Any]) -> dict[tuple[int, Any], float]:
    """Read the closed slots from shared memory as the coordinator does: by the
    segment the hello named, the rows in the order the reports gave the keys."""
    name, shape, dtype = hello.segments["WorkerPipeline.Counter.windows"]
    ring = Segment.attach(name, tuple(shape), dtype).array
    return {(period, keys[i]): float(ring[slot, i])
            for period, slot in closed for i in range(len(keys)) if ring[slot, i]}


@pytest.fixture
def new_shard(tmp_path: Path, run_ids):
    settings = settings_in(tmp_path)

    def make() -> ShardRuntime:
        return ShardRuntime(settings, shard_run(run_ids(), out=tmp_path / "out"))

    return make


def test_data_then_a_watermark_is_acked_with_the_closed_windows(new_shard) -> None:
    shard = new_shard()
    hello = shard.hello()
    assert (hello.worker, hello.pid, hello.version) == (0, os.getpid(), wire.VERSION)
    assert send(shard, data(EVENTS)) is None  # data needs no answer
    ack = send(shard, wire.Watermark(7, T0 + 60))
    assert isinstance(ack, wire.Ack)
    assert (ack.worker, ack.seq, ack.watermark) == (0, 7, T0 + 60)
    report = ack.report
    news = report.analyzers["Counter"]
    assert news.keys == ["x", "y"]
    assert [p for p, _ in news.closed] == [PERIOD]
    assert window_counts(shard, hello, news.closed, news.keys) == {
        (PERIOD, "x"): 2, (PERIOD, "y"): 1}
    assert report.events_in == report.events_out == 4
    assert report.dead == [] and report.open_sessions == 2


def test_the_end_closes_every_window_and_session(new_shard) -> None:
    shard = new_shard()
    hello = shard.hello()
    send(shard, data(EVENTS))
    done = send(shard, wire.End(3, T0 + 61, None))
    assert isinstance(done, wire.Done) and shard.finished
    assert (done.worker, done.seq, done.files) == (0, 3, None)
    news = done.report.analyzers
    assert window_counts(shard, hello, news["Counter"].closed, news["Counter"].keys) == {
        (PERIOD, "x"): 2, (PERIOD, "y"): 1, (PERIOD + 1, "x"): 1}
    assert news["Sessions"].ended == [("a", T0 + 1, T0 + 30, 2), ("b", T0 + 2, T0 + 61, 2)]
    assert done.report.open_sessions == 0
    assert [e["t"] for e in shard.pipeline.Sink.events] == [e["t"] for e in EVENTS]


def test_an_event_a_processor_raises_on_goes_up_as_a_dead_letter(new_shard) -> None:
    shard = new_shard()
    boom = {"user": "c", "type": "x", "t": T0 + 5, "boom": True}
    assert send(shard, data([EVENTS[0], boom, EVENTS[1]])) is None
    report = send(shard, wire.Watermark(1, T0 + 10)).report
    [dead] = report.dead
    assert dead.processor == "Fragile" and dead.record == boom
    assert dead.reason.startswith("ValueError: boom at ")
    assert report.events_in == 3 and report.events_failed == 1
    assert report.events_out == 2
    assert [e["user"] for e in shard.pipeline.Sink.events] == ["a", "b"]
    # Reported once: the next ack has none.
    assert send(shard, wire.Watermark(2, T0 + 11)).report.dead == []


def test_a_pile_of_dead_letters_goes_up_at_once(new_shard) -> None:
    shard = new_shard()
    many = [{"user": f"u{i}", "type": "x", "t": T0 + 1, "boom": True} for i in range(1000)]
    reply = send(shard, data(many))
    assert isinstance(reply, wire.Ack)
    assert (reply.worker, reply.seq, reply.watermark) == (0, -1, None)  # of no watermark
    assert len(reply.report.dead) == 1000


def test_raw_lines_are_decoded_and_a_bad_one_costs_itself_alone(new_shard) -> None:
    shard = new_shard()
    good = [b'{"user": "a", "type": "x", "t": 1767225601}',
            b'{"user": "b", "type": "y", "t": 1767225602}']
    bad = b'{"user": "c", "type": "\xff", "t": 1767225603}'  # not UTF-8
    assert send(shard, wire.DataRaw([T0 + 1, T0 + 3, T0 + 2], [good[0], bad, good[1]])) \
        is None
    report = send(shard, wire.Watermark(1, T0 + 5)).report
    [dead] = report.dead
    assert "malformed JSON" in dead.reason and dead.event_time == T0 + 3
    assert report.events_in == 3 and report.events_failed == 1
    assert [e["user"] for e in shard.pipeline.Sink.events] == ["a", "b"]


def test_a_batch_of_columns_runs_like_the_same_events(new_shard) -> None:
    shard = new_shard()
    hello = shard.hello()
    batch = EventBatch(np.array([T0 + 1, T0 + 2, T0 + 3]),
                       {"user": np.array([0, 1, 0]), "type": np.array([4, 4, 2])},
                       {"user": "u", "type": "k"})
    assert send(shard, wire.DataCols(*batch.to_wire())) is None
    news = send(shard, wire.End(1, T0 + 3, None)).report.analyzers
    assert window_counts(shard, hello, news["Counter"].closed, news["Counter"].keys) == {
        (PERIOD, "k4"): 2, (PERIOD, "k2"): 1}
    assert shard.pipeline.Sink.events == [{"user": "u0", "type": "k4"},
                                          {"user": "u1", "type": "k4"},
                                          {"user": "u0", "type": "k2"}]


def test_a_checkpoint_written_at_a_barrier_restores_on_another_shard(new_shard,
                                                                     tmp_path: Path) -> None:
    first = new_shard()
    send(first, data(EVENTS[:3]))
    folder = tmp_path / "cp-1"
    folder.mkdir()
    reply = send(first, wire.Barrier(1, str(folder)))
    assert isinstance(reply, wire.Checkpointed)
    assert (reply.worker, reply.checkpoint_id) == (0, 1)
    files = reply.files
    assert files and all((folder / name).stat().st_size == f.size
                         for name, f in files.items())
    assert reply.report.checkpoint is not None
    assert reply.report.checkpoint.bytes == sum(f.size for f in files.values())

    second = new_shard()  # another process's shard, say after a crash
    restored = send(second, wire.Restore(str(folder), 1))
    assert isinstance(restored, wire.Restored) and restored.worker == 0
    # The restored keys come with the RESTORED report, newer ones with later reports.
    keys = restored.report.analyzers["Counter"].keys
    hello = second.hello()
    send(second, data(EVENTS[3:]))
    news = send(second, wire.End(2, T0 + 61, None)).report.analyzers
    keys += news["Counter"].keys
    assert window_counts(second, hello, news["Counter"].closed, keys) == {
        (PERIOD, "x"): 2, (PERIOD, "y"): 1, (PERIOD + 1, "x"): 1}
    assert news["Sessions"].ended == [("a", T0 + 1, T0 + 30, 2), ("b", T0 + 2, T0 + 61, 2)]


def test_stop_ends_without_a_reply_and_an_unknown_kind_is_refused(new_shard) -> None:
    shard = new_shard()
    # A worker decodes every message before it acts on it (workers.runtime.serve).
    with pytest.raises(ContractError, match='field "kind" is 99, not a known kind'):
        shard.handle(wire.unpack_down(msgpack.packb([99])))
    assert not shard.finished
    assert send(shard, wire.Stop()) is None
    assert shard.finished
