"""The wire format between the coordinator and the workers: every message comes back equal
and keeps the bytes it always had; a malformed one is refused with an error naming the
field; frames, batches of columns and users' events travel whole.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import pytest

from bspump.batch import EventBatch
from cluster import wire
from cluster.errors import ContractError
from cluster.manifest import FileEntry

EVENTS = [{"user_id": "u1", "type": "click", "value": 1.5, "tags": ["a", "b"],
           "nested": {"x": [1, {"y": None}]}, "ok": True, "blob": b"\x00\xff"},
          {"user_id": 7, "timestamp": "2026-01-01T00:00:00+00:00", "unicode": "žluťoučký 🐎"}]

REPORT = wire.ShardReport(
    analyzers={"TW": wire.AnalyzerNews(keys=["a", 7], closed=[(3, 1)], rows=[(2, "b")],
                                       segment=("psm_x", [4, 8], "<f8")),
               "S": wire.AnalyzerNews(ended=[("k", 1.5, 9, 3)]),
               "K": wire.AnalyzerNews(anomalies=[("k", None, 5, 1.0, 0.5, 8.0)])},
    dead=[wire.DeadLetter("ValueError: x", {"user": [1, {"deep": None}]}, "P", 12.5)],
    events_in=10, events_out=9, events_batched=4, events_failed=1, open_sessions=2,
    checkpoint=wire.WriteFigures(0.25, 1024))
FILES = {"w0.state.msgpack": FileEntry(size=12, crc32=0xFFFFFFFF)}

DOWN: list[wire.Down] = [
    wire.Data([1.0, 2.5], EVENTS),
    wire.Data([1.0, 2], [{"a": 1}, {"b": [1, 2], "c": b"\x00"}]),
    wire.DataRaw([1.0, 2.0], [b'{"user_id": "u1"}', b'{"user_id": "u2"}']),
    wire.DataCols(b"\x00" * 8, [("n", "<i8", b"\x01" * 8, None), ("s", "<i4", b"\0" * 4, "u")]),
    wire.Watermark(3, 1767225600.25),
    wire.Watermark(4, -math.inf),
    wire.End(9, 1767225660.0, None),
    wire.End(9, 0.0, "/tmp/checkpoints/cp-1"),
    wire.End(5, 99, None),
    wire.Stop(),
    wire.Barrier(2, "/tmp/checkpoints/cp-2"),
    wire.Restore("/tmp/checkpoints/cp-2", 3),
]
UP: list[wire.Up] = [
    wire.Hello(0, 1234, {"P.A.windows": ("bspc-1.x-w0-P.A.windows", [10, 64], "<f8")},
               wire.VERSION),
    wire.Ack(1, 3, 1767225600.25,
             wire.ShardReport(analyzers={"A": wire.AnalyzerNews(keys=["k1", ["geo", 1]],
                                                                closed=[(29453760, 4)])},
                              events_in=10)),
    wire.Ack(1, 4, 1767225600.5, REPORT),
    wire.Ack(0, -1, None, wire.ShardReport(dead=REPORT.dead)),
    wire.Done(2, 9, wire.ShardReport(), None),
    wire.Done(1, 5, REPORT, FILES),
    wire.Output(0, "Session u1 ended with 3 events\n"),
    wire.Failed(1, "ConfigError: bad key"),
    wire.Checkpointed(0, 2, {"w0.state": FileEntry(size=10, crc32=123)}, wire.ShardReport()),
    wire.Checkpointed(1, 3, FILES, REPORT),
    wire.Restored(0, wire.ShardReport()),
    wire.Restored(0, REPORT),
    wire.Heartbeat(2, 12345),
]


def _id(message: Any) -> str:
    return type(message).__name__


@pytest.mark.parametrize("message", DOWN, ids=_id)
def test_every_message_to_a_worker_comes_back_equal(message: wire.Down) -> None:
    data = wire.pack(message)
    assert isinstance(data, bytes)
    assert wire.unpack_down(data) == message
    assert wire.unpack_down(memoryview(data)) == message  # as a zero-copy frame gives it


@pytest.mark.parametrize("message", UP, ids=_id)
def test_every_message_from_a_worker_comes_back_equal(message: wire.Up) -> None:
    data = wire.pack(message)
    assert isinstance(data, bytes)
    assert wire.unpack_up(data) == message
    assert wire.unpack_up(memoryview(data)) == message


def test_the_kinds_are_distinct_so_no_message_reads_as_another() -> None:
    kinds = [type(m).__struct_config__.tag for m in [*DOWN, *UP]]
    names = {k for k in dir(wire) if k.isupper() and k != "VERSION"
             and isinstance(getattr(wire, k), int)}
    values = [getattr(wire, k) for k in names]
    assert len(values) == len(set(values))
    assert set(kinds) <= set(values)
    # Every kind has its record, each way.
    assert set(kinds) == set(values)


def test_the_bytes_are_the_tagged_lists_of_before() -> None:
    """Typing the messages did not change the wire: ``[kind, fields...]`` as msgpack."""
    assert wire.pack(wire.Watermark(4, 2.5)) == msgpack.packb([2, 4, 2.5])
    assert wire.pack(wire.Stop()) == msgpack.packb([4])
    assert wire.pack(wire.Hello(1, 42, {"m.M": ("s", [3], "<f8")}, 1)) == \
        msgpack.packb([10, 1, 42, {"m.M": ["s", [3], "<f8"]}, 1])
    # A report is a map of what happened; an overflow ack carries dead letters only.
    dead = [wire.DeadLetter("r", {"x": 1})]
    assert wire.pack(wire.Ack(0, -1, None, wire.ShardReport(dead=dead))) == \
        msgpack.packb([11, 0, -1, None, {"dead": [{"reason": "r", "record": {"x": 1}}]}])
    assert wire.pack(wire.Done(0, 2, wire.ShardReport(events_in=3), FILES)) == \
        msgpack.packb([12, 0, 2, {"events_in": 3},
                       {"w0.state.msgpack": {"size": 12, "crc32": 0xFFFFFFFF}}])


def test_what_json_would_lose_comes_back_as_its_nearest_plain_value() -> None:
    """Users' events keep their values by msgpack's rules, as before the messages were
    typed: tuples and sets become lists, numpy scalars their Python value, msgpack's own
    types stay, anything else becomes its text. Nothing is pickled: no code travels."""

    class Odd:
        def __str__(self) -> str:
            return "odd!"

    ext = msgpack.ExtType(5, b"ab")
    message = wire.Data([np.float64(1.5)], [{"t": (1, 2), "s": {3}, "n": np.int64(4),
                                             "f": np.float32(0.5), "o": Odd(), "x": ext,
                                             "i": 10**18}])
    got = wire.unpack_down(wire.pack(message))
    assert got == wire.Data([1.5], [{"t": [1, 2], "s": [3], "n": 4, "f": 0.5, "o": "odd!",
                                     "x": ext, "i": 10**18}])
    assert isinstance(got, wire.Data) and type(got.times[0]) is float


def test_keys_that_are_not_text_survive() -> None:
    # An event's keys, a window's keys and a key given a row may be numbers.
    events = wire.Data([1.0], [{1: 2, 3: 4}])
    assert wire.unpack_down(wire.pack(events)) == events
    news = wire.AnalyzerNews(keys=[1, 2.5, ["geo", 1]], rows=[(0, 7)],
                             ended=[(11, 1.0, 2.0, 3)])
    ack = wire.Ack(0, 1, 2.0, wire.ShardReport(analyzers={"A": news}))
    assert wire.unpack_up(wire.pack(ack)) == ack


def test_a_cut_message_is_refused_not_read_short() -> None:
    data = wire.pack(wire.Data([1.0, 2.0], EVENTS))
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(ContractError):
            wire.unpack_down(data[:cut])


def test_one_frame_holds_one_message() -> None:
    # Frames are ZeroMQ messages: two messages glued together are no message.
    data = wire.pack(wire.Stop()) + wire.pack(wire.Stop())
    with pytest.raises(ContractError, match="not msgpack"):
        wire.unpack_down(data)


def _raw(*items: Any) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


@pytest.mark.parametrize("data, error", [
    (_raw(11, 0, "7", 1.0, {}), 'ACK: field "seq" must be an integer, got string'),
    (_raw(11, 0, 7, 1.0), 'ACK: field "report" is missing'),
    (_raw(10, "w", 1, {}, 1), 'HELLO: field "worker" must be an integer, got string'),
    (_raw(10, 0, 1, {"m.M": ["s", [3], 8]}, 1),
     "HELLO: field \"segments['m.M'][2]\" must be a string, got integer"),
    (_raw(11, 0, 7, 1.0, {"dead": [{"reason": 3}]}),
     'ACK: field "report.dead[0].reason" must be a string, got integer'),
    (_raw(11, 0, 7, 1.0, {"analyzers": {"TW": {"closed": [[1, "x"]]}}}),
     "ACK: field \"report.analyzers['TW'].closed[0][1]\" must be an integer, got string"),
    (_raw(11, 0, 7, 1.0, {"events_in": [1]}),
     'ACK: field "report.events_in" must be an integer or null, got list'),
    (_raw(15, 0, 3, {"w0.state.msgpack": {"size": -1, "crc32": 0}}, {}),
     "CHECKPOINTED: field \"files['w0.state.msgpack'].size\" must be an integer >= 0"),
    (_raw(99, 0), 'message: field "kind" is 99, not a known kind'),
    (_raw(2, 1, 2.0), 'message: field "kind" is 2, not a known kind'),  # down, sent up
    (msgpack.packb({"kind": 11}), "message: must be a list, got map"),
    (b"\xc1", "a message that is not msgpack"),
], ids=["seq text", "no report", "worker text", "segment dtype", "dead reason",
        "closed slot", "events_in list", "negative size", "unknown kind", "wrong way",
        "a map", "not msgpack"])
def test_a_malformed_message_from_a_worker_names_the_field(data: bytes, error: str) -> None:
    with pytest.raises(ContractError) as e:
        wire.unpack_up(data)
    assert str(e.value).startswith(error)


@pytest.mark.parametrize("data, error", [
    (_raw(2, 1, "late"), 'WATERMARK: field "watermark" must be a number, got string'),
    (_raw(7, [1.0], ["not bytes"]), 'DATA_RAW: field "lines[0]" must be bytes, got string'),
    (_raw(1, [1.0, "x"], [{}, {}]), 'DATA: field "times[1]" must be a number, got string'),
    (_raw(6, "/cp"), 'RESTORE: field "old_workers" is missing'),
    (_raw(3, 1, 2.0, 5), 'END: field "folder" must be a string or null, got integer'),
], ids=["watermark text", "raw line text", "time text", "restore short", "end folder"])
def test_a_malformed_message_to_a_worker_names_the_field(data: bytes, error: str) -> None:
    with pytest.raises(ContractError) as e:
        wire.unpack_down(data)
    assert str(e.value).startswith(error)


def _batch() -> EventBatch:
    rng = np.random.default_rng(3)
    n = 257
    return EventBatch(
        1767225600.0 + np.cumsum(rng.random(n)),
        {"user_id": rng.integers(0, 1000, n, dtype=np.int64),
         "type": rng.integers(0, 5, n, dtype=np.int32),
         "value": rng.normal(100, 10, n),
         "flag": rng.random(n) > 0.5},
        {"user_id": "u", "type": "type"})


def _travel(batch_wire: list[Any]) -> EventBatch:
    """A batch's wire form sent as DATA_COLS and read back as a worker reads it."""
    got = wire.unpack_down(wire.pack(wire.DataCols(*batch_wire)))
    assert isinstance(got, wire.DataCols)
    return EventBatch.from_wire([got.times, got.columns])


def test_a_batch_of_columns_comes_back_row_for_row() -> None:
    batch = _batch()
    got = _travel(batch.to_wire())
    assert len(got) == len(batch)
    np.testing.assert_array_equal(got.times, batch.times)
    for name in batch.columns:
        np.testing.assert_array_equal(got[name], batch[name])
        assert got[name].dtype == batch[name].dtype
    assert got.prefixes == batch.prefixes
    # The rows a worker builds are the rows the source had.
    assert got.to_dicts() == batch.to_dicts()
    assert got.to_dicts()[0]["user_id"].startswith("u")


def test_a_slice_of_a_batch_travels_as_its_own_rows() -> None:
    batch = _batch()
    part = batch[np.array([5, 6, 200])]
    assert _travel(part.to_wire()).to_dicts() == [batch.row(5), batch.row(6), batch.row(200)]


def test_an_empty_batch_comes_back_empty() -> None:
    empty = _batch()[np.array([], dtype=np.int64)]
    got = _travel(empty.to_wire())
    assert len(got) == 0 and got.to_dicts() == []


def test_a_batch_naming_an_object_column_is_refused() -> None:
    # Object arrays would be pickles: a crafted message could run code.
    times, cols = _batch().to_wire()
    cols[0][1] = "|O"
    with pytest.raises(ValueError, match="object arrays"):
        _travel([times, cols])
