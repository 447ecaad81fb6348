"""The wire format: every message round-trips, keeps its bytes, and a malformed one is
refused with an error naming the field."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from cluster import wire
from cluster.errors import ContractError
from cluster.manifest import FileEntry

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
    wire.Data([1.0, 2], [{"a": 1}, {"b": [1, 2], "c": b"\x00"}]),
    wire.DataRaw([1.5], [b'{"a": 1}']),
    wire.DataCols(b"\x00" * 8, [("n", "<i8", b"\x01" * 8, None), ("s", "<i4", b"\0" * 4, "u")]),
    wire.Watermark(4, 1767225600.5),
    wire.End(5, 99.0, "/cp/cp-00000003"),
    wire.End(5, 99, None),
    wire.Stop(),
    wire.Barrier(3, "/cp/cp-00000003"),
    wire.Restore("/cp/cp-00000002", 3),
]
UP: list[wire.Up] = [
    wire.Hello(1, 4242, {"m.M": ("psm_1", [3, 4], "<f8")}, wire.VERSION),
    wire.Ack(1, 4, 1767225600.5, REPORT),
    wire.Ack(0, -1, None, wire.ShardReport(dead=REPORT.dead)),
    wire.Done(1, 5, REPORT, FILES),
    wire.Done(1, 5, wire.ShardReport(), None),
    wire.Output(0, "a line\n"),
    wire.Failed(2, "ValueError: no"),
    wire.Checkpointed(1, 3, FILES, REPORT),
    wire.Restored(0, REPORT),
    wire.Heartbeat(1, 12345),
]


@pytest.mark.parametrize("message", DOWN, ids=lambda m: type(m).__name__)
def test_every_message_to_a_worker_round_trips(message: wire.Down) -> None:
    assert wire.unpack_down(wire.pack(message)) == message


@pytest.mark.parametrize("message", UP, ids=lambda m: type(m).__name__)
def test_every_message_from_a_worker_round_trips(message: wire.Up) -> None:
    assert wire.unpack_up(wire.pack(message)) == message


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


def test_users_events_travel_by_msgpacks_rules() -> None:
    """Events keep their values; what msgpack cannot hold becomes its string, as before."""

    class Odd:
        def __str__(self) -> str:
            return "odd!"

    ext = msgpack.ExtType(5, b"ab")
    got = wire.unpack_down(wire.pack(wire.Data([1.0], [{"o": Odd(), "s": {3}, "x": ext,
                                                        "i": 10**18, "t": (1, 2)}])))
    assert isinstance(got, wire.Data)
    assert got.events == [{"o": "odd!", "s": [3], "x": ext, "i": 10**18, "t": [1, 2]}]
    assert type(got.times[0]) is float


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
