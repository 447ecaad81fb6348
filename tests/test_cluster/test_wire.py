"""The wire format between the coordinator and the workers: what goes in comes out.

Behaviour only (round trips, framing, refusals), not the encoding's internals, so the
tests hold whatever shape the messages take in the code.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from bspump.batch import EventBatch
from cluster import wire

EVENTS = [{"user_id": "u1", "type": "click", "value": 1.5, "tags": ["a", "b"],
           "nested": {"x": [1, {"y": None}]}, "ok": True, "blob": b"\x00\xff"},
          {"user_id": 7, "timestamp": "2026-01-01T00:00:00+00:00", "unicode": "žluťoučký 🐎"}]

DOWN = [
    [wire.DATA, [1.0, 2.5], EVENTS],
    [wire.DATA_RAW, [1.0, 2.0], [b'{"user_id": "u1"}', b'{"user_id": "u2"}']],
    [wire.WATERMARK, 3, 1767225600.25],
    [wire.WATERMARK, 4, -math.inf],
    [wire.END, 9, 1767225660.0, None],
    [wire.END, 9, 0.0, "/tmp/checkpoints/cp-1"],
    [wire.STOP],
    [wire.BARRIER, 2, "/tmp/checkpoints/cp-2"],
    [wire.RESTORE, "/tmp/checkpoints/cp-2", 3],
]
UP = [
    [wire.HELLO, 0, 1234, {"P.A.windows": ["bspc-1.x-w0-P.A.windows", [10, 64], "<f8"]}],
    [wire.ACK, 1, 3, 1767225600.25, {"analyzers": {"A": {"keys": ["k1", ["geo", 1]],
                                                         "closed": [[29453760, 4]]}},
                                      "dead": [], "events_in": 10}],
    [wire.DONE, 2, 9, {"analyzers": {}}, None],
    [wire.OUTPUT, 0, "Session u1 ended with 3 events\n"],
    [wire.FAILED, 1, "ConfigError: bad key"],
    [wire.CHECKPOINTED, 0, 2, {"w0.state": {"size": 10, "crc32": 123}}, {}],
    [wire.RESTORED, 0, {}],
    [wire.HEARTBEAT, 2, 12345],
]


@pytest.mark.parametrize("message", DOWN + UP, ids=lambda m: f"kind{m[0]}")
def test_every_message_comes_back_equal(message: list[object]) -> None:
    data = wire.pack(message)
    assert isinstance(data, bytes)
    assert wire.unpack(data) == message
    assert wire.unpack(memoryview(data)) == message  # as a zero-copy frame gives it


def test_the_kinds_are_distinct_so_no_message_reads_as_another() -> None:
    kinds = [m[0] for m in DOWN + UP]
    names = {k for k in dir(wire) if k.isupper() and isinstance(getattr(wire, k), int)}
    values = [getattr(wire, k) for k in names]
    assert len(values) == len(set(values))
    assert set(kinds) <= set(values)


def test_what_json_would_lose_comes_back_as_its_nearest_plain_value() -> None:
    # Tuples and sets from user events become lists; numpy scalars their Python value;
    # anything else its text. Nothing is pickled: a message cannot carry code.
    class Odd:
        def __str__(self) -> str:
            return "odd!"

    message = [wire.DATA, [np.float64(1.5)], [{"t": (1, 2), "s": {3}, "n": np.int64(4),
                                                "f": np.float32(0.5), "o": Odd()}]]
    assert wire.unpack(wire.pack(message)) == [wire.DATA, [1.5], [
        {"t": [1, 2], "s": [3], "n": 4, "f": 0.5, "o": "odd!"}]]


def test_keys_that_are_not_text_survive() -> None:
    # A report's window keys and an event's keys may be numbers.
    message = [wire.ACK, 0, 1, 2.0, {"analyzers": {"A": {"counts": {1: 2, 3: 4}}}}]
    assert wire.unpack(wire.pack(message)) == message


def test_a_cut_message_is_refused_not_read_short() -> None:
    data = wire.pack([wire.DATA, [1.0, 2.0], EVENTS])
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises((ValueError, msgpack.exceptions.UnpackException)):
            wire.unpack(data[:cut])


def test_one_frame_holds_one_message() -> None:
    # Frames are ZeroMQ messages: two messages glued together are no message.
    data = wire.pack([wire.STOP]) + wire.pack([wire.STOP])
    with pytest.raises((ValueError, msgpack.exceptions.ExtraData)):
        wire.unpack(data)


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


def test_a_batch_of_columns_comes_back_row_for_row() -> None:
    batch = _batch()
    got = EventBatch.from_wire(wire.unpack(wire.pack([wire.DATA_COLS, *batch.to_wire()]))[1:])
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
    got = EventBatch.from_wire(wire.unpack(wire.pack([wire.DATA_COLS, *part.to_wire()]))[1:])
    assert got.to_dicts() == [batch.row(5), batch.row(6), batch.row(200)]


def test_an_empty_batch_comes_back_empty() -> None:
    empty = _batch()[np.array([], dtype=np.int64)]
    got = EventBatch.from_wire(wire.unpack(wire.pack([wire.DATA_COLS, *empty.to_wire()]))[1:])
    assert len(got) == 0 and got.to_dicts() == []


def test_a_batch_naming_an_object_column_is_refused() -> None:
    # Object arrays would be pickles: a crafted message could run code.
    times, cols = _batch().to_wire()
    cols[0][1] = "|O"
    with pytest.raises(ValueError, match="object arrays"):
        EventBatch.from_wire(wire.unpack(wire.pack([wire.DATA_COLS, times, cols]))[1:])
