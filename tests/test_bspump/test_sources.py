"""File, CSV, msgpack and generator sources; the JSON-lines file sink."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

import bspump
from bspump.file import FileCSVSource, FileJSONLinesSink, FileJSONLinesSource, FileMsgpackSource
from bspump.generator import GeneratorSource
from bspump.processor import Source, SourceBatch
from cluster.config import Config
from cluster.errors import ConfigError


def app_of(max_record_bytes: int = 1 << 20, config: str = "") -> bspump.Application:
    run = bspump.RunInfo(role="coordinator", run_id="t", max_record_bytes=max_record_bytes)
    return bspump.Application(Config.from_string(config), run=run)


def read_all(source: Source) -> list[SourceBatch]:
    async def collect() -> list[SourceBatch]:
        return [b async for b in source.batches()]

    return asyncio.run(collect())


def records(batches: list[SourceBatch]) -> list[Any]:
    return [r for b in batches for r in b.records]


def dead(batches: list[SourceBatch]) -> list[tuple[Any, str]]:
    return [d for b in batches for d in b.dead]


# -- JSON lines ----------------------------------------------------------------------------


def test_json_lines_yields_dicts(tmp_path: Path) -> None:
    rows = [{"user_id": f"u{i}", "n": i, "nested": {"x": [i, None]}} for i in range(25)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    app = app_of()
    src = FileJSONLinesSource(app, bspump.Pipeline(app, "P"), path=str(path),
                              config={"batch": 10})
    batches = read_all(src)
    assert [len(b.records) for b in batches] == [10, 10, 5]
    assert records(batches) == rows
    assert dead(batches) == []


def test_json_lines_dead_letters_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        '{"a": 1}',                 # 1
        '{"a": 2',                  # 2: malformed
        "[1, 2, 3]",                # 3: JSON, not an object
        '"text"',                   # 4: JSON, not an object
        "",                         # 5: blank: skipped
        '{"big": "' + "x" * 200 + '"}',  # 6: above max_record_bytes=100
        '{"a": 3}',                 # 7
        "not json at all",          # 8
        '{"b": "' + "y" * 95 + '"}',     # 9: 104 bytes + newline: too big
        '{"c": "' + "z" * 84 + '"}',     # 10: 93 bytes: fits
    ]
    path.write_text("\n".join(lines) + "\n")
    app = app_of(max_record_bytes=100)
    src = FileJSONLinesSource(app, bspump.Pipeline(app, "P"), path=str(path),
                              config={"batch": 4})
    batches = read_all(src)
    assert records(batches) == [{"a": 1}, {"a": 3}, {"c": "z" * 84}]
    reasons = [reason for _, reason in dead(batches)]
    assert [r.split(": ", 1)[0] for r in reasons] == [
        f"{path}:{n}" for n in (2, 3, 4, 6, 8, 9)]
    assert "malformed JSON" in reasons[0]
    assert "not a JSON object" in reasons[1] and "not a JSON object" in reasons[2]
    assert "max_record_bytes=100" in reasons[3]
    assert f"{len(lines[5]) + 1} bytes" in reasons[3]
    assert "malformed JSON" in reasons[4]
    assert "max_record_bytes=100" in reasons[5]
    assert dead(batches)[1][0] == "[1, 2, 3]"  # a preview of the line, as every dead letter


def test_json_lines_oversize_record_without_newline_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "tail.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "' + b"q" * 500 + b'"}')
    app = app_of(max_record_bytes=100)
    src = FileJSONLinesSource(app, bspump.Pipeline(app, "P"), path=str(path))
    batches = read_all(src)
    assert records(batches) == [{"a": 1}]
    assert [r for _, r in dead(batches)] == [
        f"{path}:2: record of 509 bytes exceeds max_record_bytes=100"]


def test_json_lines_blank_lines_do_not_end_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n\n\n\n\n{"a": 3}\n\n')
    app = app_of()
    src = FileJSONLinesSource(app, bspump.Pipeline(app, "P"), path=str(path),
                              config={"batch": 2})
    assert records(read_all(src)) == [{"a": 1}, {"a": 2}, {"a": 3}]


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_json_lines_seek_resumes_exactly_after_a_batch(tmp_path: Path, batch: int) -> None:
    rows = [{"i": i} for i in range(20)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    text = text.replace('{"i": 5}\n', '{"i": 5}\n{broken\n\n')  # a dead and a blank line
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    app = app_of()
    pipeline = bspump.Pipeline(app, "P")
    first = read_all(FileJSONLinesSource(app, pipeline, id="a", path=str(path),
                                         config={"batch": batch}))
    for k, b in enumerate(first):
        src = FileJSONLinesSource(app, pipeline, id=f"r{batch}.{k}", path=str(path),
                                  config={"batch": batch})
        src.seek(b.position)
        rest = read_all(src)
        # Independently: every row after the last one this batch (and those before) held.
        seen = records(first[: k + 1])
        expected = rows[len(seen):]
        assert records(rest) == expected
        assert len(dead(rest)) == (0 if any(d for bb in first[: k + 1] for d in bb.dead) else 1)
        if rest:  # line numbers carry on from the position
            assert rest[-1].position["line"] == first[-1].position["line"]


@pytest.mark.parametrize("chunk", [7, 16, 50])
def test_raw_json_lines_resume_at_the_start_of_a_line_cut_by_a_chunk(tmp_path: Path,
                                                                     chunk: int) -> None:
    # Raw reading goes by chunks of bytes: a chunk mostly ends inside a line, whose start
    # waits for the next chunk. A saved position must point at that start, or the line is
    # lost on resume.
    lines = [json.dumps({"i": i, "pad": "x" * (i % 5)}).encode() for i in range(30)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    app = app_of()
    pipeline = bspump.Pipeline(app, "P")

    def source(name: str) -> FileJSONLinesSource:
        src = FileJSONLinesSource(app, pipeline, id=name, path=str(path))
        src.want_raw = True
        src.RAW_CHUNK = chunk  # type: ignore[misc]
        return src

    first = read_all(source("a"))
    assert [line for b in first for line in b.raw or []] == lines
    for k, b in enumerate(first):
        src = source(f"r{chunk}.{k}")
        src.seek(b.position)
        rest = [line for bb in read_all(src) for line in bb.raw or []]
        seen = sum(len(bb.raw or []) for bb in first[: k + 1])
        assert rest == lines[seen:], (k, b.position)


def test_file_source_needs_a_readable_path(tmp_path: Path) -> None:
    app = app_of()
    pipeline = bspump.Pipeline(app, "P")
    with pytest.raises(ConfigError, match="path"):
        FileJSONLinesSource(app, pipeline)
    src = FileJSONLinesSource(app, pipeline, id="x", path=str(tmp_path / "absent.jsonl"))
    with pytest.raises(ConfigError, match=r"absent\.jsonl"):
        read_all(src)


def test_file_source_path_from_config_section(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"a": 1}\n')
    app = app_of(config=f"[pipeline:P:FileJSONLinesSource]\npath = {path}\nbatch = 5\n")
    src = FileJSONLinesSource(app, bspump.Pipeline(app, "P"), path="/elsewhere.jsonl")
    assert src.path == path and src.batch == 5
    assert records(read_all(src)) == [{"a": 1}]


# -- CSV -----------------------------------------------------------------------------------


def test_csv_converts_numbers_and_flags_wrong_field_counts(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "user_id,count,value,note\n"        # line 1
        "u1,3,1.5,hello\n"                  # 2
        "u2,-4,2e3,\n"                      # 3
        "u3,5\n"                            # 4: 2 fields
        "u4,1,2,3,4\n"                      # 5: 5 fields
        "u6,nan,Infinity,1_000\n"          # 6: words stay words
        "u5, 6 ,.5,-0.25\n"                 # 7
    )
    app = app_of()
    src = FileCSVSource(app, bspump.Pipeline(app, "P"), path=str(path), config={"batch": 100})
    batches = read_all(src)
    assert records(batches) == [
        {"user_id": "u1", "count": 3, "value": 1.5, "note": "hello"},
        {"user_id": "u2", "count": -4, "value": 2000.0, "note": ""},
        {"user_id": "u6", "count": "nan", "value": "Infinity", "note": "1_000"},
        {"user_id": "u5", "count": 6, "value": 0.5, "note": -0.25},
    ]
    assert isinstance(records(batches)[1]["value"], float)
    reasons = [r for _, r in dead(batches)]
    assert reasons == [f"{path}:4: row has 2 fields, header has 4",
                       f"{path}:5: row has 5 fields, header has 4"]


def test_csv_without_conversion_and_seek(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a;b\n" + "".join(f"{i};x{i}\n" for i in range(10)))
    app = app_of(config="[pipeline:P:FileCSVSource]\ndelimiter = ;\nconvert_numbers = no\n")
    pipeline = bspump.Pipeline(app, "P")
    src = FileCSVSource(app, pipeline, path=str(path), config={"batch": 4})
    batches = read_all(src)
    assert records(batches) == [{"a": str(i), "b": f"x{i}"} for i in range(10)]
    assert [b.position for b in batches] == [4, 8, 10]
    again = FileCSVSource(app, pipeline, id="again", path=str(path), config={"batch": 4})
    again.seek(batches[0].position)
    assert records(read_all(again)) == [{"a": str(i), "b": f"x{i}"} for i in range(4, 10)]


# -- msgpack -------------------------------------------------------------------------------


def test_msgpack_reads_maps(tmp_path: Path) -> None:
    rows = [{"user_id": f"u{i}", "n": i, "b": b"\x00\x01", "f": i / 4} for i in range(7)]
    path = tmp_path / "in.msgpack"
    path.write_bytes(b"".join(msgpack.packb(r, use_bin_type=True) for r in rows))
    app = app_of()
    src = FileMsgpackSource(app, bspump.Pipeline(app, "P"), path=str(path), config={"batch": 3})
    batches = read_all(src)
    assert records(batches) == rows
    assert dead(batches) == []
    assert batches[-1].position == path.stat().st_size


def test_msgpack_reports_a_non_map_and_a_corrupt_tail(tmp_path: Path) -> None:
    good = [msgpack.packb({"a": i}) for i in range(3)]
    not_map = msgpack.packb([1, 2])
    path = tmp_path / "corrupt.msgpack"
    path.write_bytes(good[0] + not_map + good[1] + b"\xc1\xc1" + good[2])
    app = app_of()
    src = FileMsgpackSource(app, bspump.Pipeline(app, "P"), path=str(path))
    batches = read_all(src)
    assert records(batches) == [{"a": 0}, {"a": 1}]
    reasons = [r for _, r in dead(batches)]
    assert len(reasons) == 2
    assert f"record at byte {len(good[0])}: not a map" in reasons[0]
    bad_at = len(good[0]) + len(not_map) + len(good[1])
    assert f"corrupt msgpack at byte {bad_at}" in reasons[1]
    assert str(path) in reasons[1]


def test_msgpack_reports_a_truncated_last_record(tmp_path: Path) -> None:
    first = msgpack.packb({"a": 1})
    last = msgpack.packb({"a": 2, "text": "x" * 40})
    path = tmp_path / "cut.msgpack"
    path.write_bytes(first + last[:-10])
    app = app_of()
    src = FileMsgpackSource(app, bspump.Pipeline(app, "P"), path=str(path))
    batches = read_all(src)
    assert records(batches) == [{"a": 1}]
    reasons = [r for _, r in dead(batches)]
    assert len(reasons) == 1
    assert f"{path}: truncated msgpack record at byte {len(first)}" in reasons[0]
    # The position stays after the last whole record: a resume reads the cut one again.
    assert batches[-1].position == len(first)


def test_msgpack_seek_resumes_after_a_batch(tmp_path: Path) -> None:
    rows = [{"i": i, "pad": "p" * i} for i in range(10)]
    path = tmp_path / "in.msgpack"
    path.write_bytes(b"".join(msgpack.packb(r) for r in rows))
    app = app_of()
    pipeline = bspump.Pipeline(app, "P")
    batches = read_all(FileMsgpackSource(app, pipeline, path=str(path), config={"batch": 4}))
    src = FileMsgpackSource(app, pipeline, id="again", path=str(path), config={"batch": 4})
    src.seek(batches[0].position)
    assert batches[0].position == sum(len(msgpack.packb(r)) for r in rows[:4])
    assert records(read_all(src)) == rows[4:]


# -- generator -----------------------------------------------------------------------------

GEN = {"count": 53, "batch": 10, "seed": 42, "users": 20, "types": 3,
       "events_per_second": 4.0, "start_time": 1000.0}


def generated(position: int | None = None, **config: Any) -> list[SourceBatch]:
    app = app_of()
    src = GeneratorSource(app, bspump.Pipeline(app, "G"), config={**GEN, **config})
    if position is not None:
        src.seek(position)
    return read_all(src)


def test_generator_is_deterministic_for_a_seed() -> None:
    a, b = generated(), generated()
    assert records(a) == records(b)
    assert [x.position for x in a] == [10, 20, 30, 40, 50, 53]
    events = records(a)
    assert len(events) == 53
    # Values follow the documented shape, computed here.
    assert [e["timestamp"] for e in events] == [round(1000.0 + i / 4.0, 3) for i in range(53)]
    assert {e["user_id"] for e in events} <= {f"u{i}" for i in range(20)}
    assert {e["type"] for e in events} <= {"type0", "type1", "type2"}
    assert all(-90 <= e["latitude"] <= 90 and -180 <= e["longitude"] <= 180 for e in events)
    other = records(generated(seed=43))
    assert [e["user_id"] for e in other] != [e["user_id"] for e in events]


@pytest.mark.parametrize("position", [0, 10, 27, 52, 53])
def test_generator_seek_continues_the_same_sequence(position: int) -> None:
    full = records(generated())
    rest = records(generated(position))
    assert rest == full[position:]


def test_generator_out_of_order_jitter_is_bounded() -> None:
    events = records(generated(out_of_order=5.0))
    plain = records(generated())
    for i, (e, p) in enumerate(zip(events, plain, strict=True)):
        assert 1000.0 + i / 4.0 - 5.0 - 0.001 <= e["timestamp"] <= 1000.0 + i / 4.0 + 0.001
        assert e["user_id"] == p["user_id"]  # jitter leaves the rest of the stream alone
    assert any(e["timestamp"] != p["timestamp"] for e, p in zip(events, plain, strict=True))


# -- JSON-lines sink -----------------------------------------------------------------------


def test_json_lines_sink_writes_one_file_per_worker(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for worker in (0, 3):
        run = bspump.RunInfo(role="shard", run_id="t", worker=worker, workers=4,
                             output_dir=out)
        app = bspump.Application(Config.from_string(""), run=run)
        pipeline = bspump.Pipeline(app, "P")
        sink = FileJSONLinesSink(app, pipeline, path="results/events.jsonl")
        pipeline.build(bspump.Source(app, pipeline), sink)
        pipeline.start(run)
        events = [{"w": worker, "i": i, "text": "ü"} for i in range(3)]
        pipeline.process_batch([0.0] * 3, events)
        pipeline.finish(0.0)
    assert sorted(p.name for p in (out / "results").iterdir()) == [
        "events.w0.jsonl", "events.w3.jsonl"]
    for worker in (0, 3):
        lines = (out / "results" / f"events.w{worker}.jsonl").read_text("utf-8").splitlines()
        assert [json.loads(x) for x in lines] == [
            {"w": worker, "i": i, "text": "ü"} for i in range(3)]


def test_json_lines_sink_outside_a_cluster_writes_the_path(tmp_path: Path) -> None:
    target = tmp_path / "plain.jsonl"
    app = bspump.Application()
    sink = FileJSONLinesSink(app, bspump.Pipeline(app, "P"), path=str(target))
    sink.write({}, {"a": 1})
    sink.write({}, {"a": 2})
    sink.close()
    lines = target.read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"a": 1}, {"a": 2}]


# -- bad input costs the bad record alone (issue 11 item 2) ----------------------------------


def raw_read(path: Path, app: bspump.Application | None = None, chunk: int | None = None,
             position: Any = None) -> list[SourceBatch]:
    """The raw route of a JSON-lines file, as the coordinator asks for it."""
    app = app or app_of()

    class Small(FileJSONLinesSource):
        RAW_CHUNK = chunk or FileJSONLinesSource.RAW_CHUNK

    src = Small(app, bspump.Pipeline(app, "P"), path=str(path))
    src.want_raw = True
    if position is not None:
        src.seek(position)
    return read_all(src)


def raw_records(batches: list[SourceBatch]) -> list[tuple[str, bytes]]:
    """(place, line) of every raw record."""
    return [(b.where(i), line) for b in batches for i, line in enumerate(b.raw or [])]


def test_json_lines_record_nested_1000_deep_is_one_dead_letter(tmp_path: Path) -> None:
    deep = '{"a": 2, "x": ' + "[" * 1000 + "]" * 1000 + "}"
    path = tmp_path / "deep.jsonl"
    path.write_text('{"a": 1}\n' + deep + '\n{"a": 3}\n')
    app = app_of()
    batches = read_all(FileJSONLinesSource(app, bspump.Pipeline(app, "P"), path=str(path)))
    assert records(batches) == [{"a": 1}, {"a": 3}]
    [(record, reason)] = dead(batches)
    assert reason == f"{path}:2: record nests deeper than max_record_depth=64"
    assert record.startswith('{"a": 2, "x": [[[') and len(record) < 600


@pytest.mark.parametrize("route", ["records", "raw"])
def test_json_lines_bom_costs_no_record(tmp_path: Path, route: str) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    if route == "raw":
        batches = raw_read(path)
        assert [line for _, line in raw_records(batches)] == [b'{"a": 1}', b'{"a": 2}']
    else:
        app = app_of()
        batches = read_all(FileJSONLinesSource(app, bspump.Pipeline(app, "P"), path=str(path)))
        assert records(batches) == [{"a": 1}, {"a": 2}]
    assert dead(batches) == []


def test_raw_blank_lines_are_not_handed_on_as_records(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b'{"a": 1}\n  \n\r\n{"a": 2}\r\n\t\n')
    batches = raw_read(path)
    assert raw_records(batches) == [(f"{path}:1", b'{"a": 1}'), (f"{path}:4", b'{"a": 2}\r')]


def test_raw_position_after_a_partial_line_resumes_exactly(tmp_path: Path) -> None:
    rows = [json.dumps({"i": i, "pad": "p" * (i % 13)}).encode() for i in range(60)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    # Chunks of 37 bytes end inside lines: each batch keeps the partial line for later.
    batches = raw_read(path, chunk=37)
    assert [line for _, line in raw_records(batches)] == rows
    assert [p for p, _ in raw_records(batches)] == [f"{path}:{n}" for n in range(1, 61)]
    for k, b in enumerate(batches):
        seen = sum(len(x.raw or []) for x in batches[: k + 1])
        # The offset is the start of the first line not yet handed on.
        assert b.position == {"offset": sum(len(r) + 1 for r in rows[:seen]), "line": seen}
        rest = raw_read(path, chunk=37, position=b.position)
        assert raw_records(rest) == raw_records(batches)[seen:]


def csv_read(path: Path, app: bspump.Application | None = None,
             batch: int = 100) -> list[SourceBatch]:
    app = app or app_of()
    return read_all(FileCSVSource(app, bspump.Pipeline(app, "P"), path=str(path),
                                  config={"batch": batch}))


def csv_rows(n: int, start: int = 0) -> list[bytes]:
    return [f"u{i},{i},x{i}\n".encode() for i in range(start, start + n)]


def expected_rows(numbers: range | list[int]) -> list[dict[str, Any]]:
    return [{"user_id": f"u{i}", "n": i, "note": f"x{i}"} for i in numbers]


def test_csv_invalid_utf8_costs_one_row(tmp_path: Path) -> None:
    path = tmp_path / "bytes.csv"
    lines = [b"user_id,n,note\n", *csv_rows(2000)]
    lines[501] = b"u500,500,caf\xe9\n"  # row 500 is on line 502
    path.write_bytes(b"".join(lines))
    batches = csv_read(path)
    assert records(batches) == expected_rows([i for i in range(2000) if i != 500])
    [(record, reason)] = dead(batches)
    assert reason.startswith(f"{path}:502: line 502 is not valid utf-8")
    assert record == "u500,500,caf\ufffd"


def test_csv_field_over_128_kib_costs_one_row(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    big = b'u5,5,"' + b"y" * (200 * 1024) + b'"\n'
    path.write_bytes(b"user_id,n,note\n" + b"".join(csv_rows(5)) + big
                     + b"".join(csv_rows(5, 6)))
    batches = csv_read(path, app_of(max_record_bytes=1 << 20))
    assert len(records(batches)) == 11
    assert records(batches)[5]["note"] == "y" * (200 * 1024)
    # Over max_record_bytes: that row alone is dead.
    batches = csv_read(path, app_of(max_record_bytes=64 * 1024))
    assert records(batches) == expected_rows([0, 1, 2, 3, 4, 6, 7, 8, 9, 10])
    [(_, reason)] = dead(batches)
    assert reason.startswith(f"{path}:7: ")
    assert "max_record_bytes=65536" in reason


def test_csv_unterminated_quote_is_reported_where_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "quote.csv"
    lines = [b"user_id,n,note\n", *csv_rows(10)]
    lines[4] = b'u3,3,"never closed\n'  # line 5
    path.write_bytes(b"".join(lines))
    batches = csv_read(path)
    assert records(batches) == expected_rows([0, 1, 2, 4, 5, 6, 7, 8, 9])
    [(_, reason)] = dead(batches)
    assert reason == f"{path}:5: a quoted field opened on this line is never closed"


def test_csv_unterminated_quote_in_a_long_file_costs_one_row(tmp_path: Path) -> None:
    path = tmp_path / "quote.csv"
    lines = [b"user_id,n,note\n", *csv_rows(3000)]
    lines[11] = b'u10,10,"never closed\n'
    path.write_bytes(b"".join(lines))
    batches = csv_read(path, app_of(max_record_bytes=4096))
    assert records(batches) == expected_rows([i for i in range(3000) if i != 10])
    [(_, reason)] = dead(batches)
    assert reason.startswith(f"{path}:12: a quoted field opened on this line is never closed")


def test_csv_quoted_newlines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b'\xef\xbb\xbfuser_id,n,note\nu0,0,x0\nu1,1,"two\nlines"\n\nu2,2,x2')
    batches = csv_read(path)
    assert records(batches) == [{"user_id": "u0", "n": 0, "note": "x0"},
                                {"user_id": "u1", "n": 1, "note": "two\nlines"},
                                {"user_id": "u2", "n": 2, "note": "x2"}]
    assert dead(batches) == []
    places = [b.where(i) for b in batches for i in range(len(b.records))]
    assert places == [f"{path}:2", f"{path}:3", f"{path}:6"]


def test_stdin_follows_the_record_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from bspump.common import StdinSource

    deep = b'{"a": 9, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    data = b'\xef\xbb\xbf{"a": 1}\n\n' + deep + b'\n[1]\n{"a": 2}\n{"a": "' + b"z" * 200 + b'"}\n'

    class Stdin:
        buffer = io.BytesIO(data)

    monkeypatch.setattr("sys.stdin", Stdin)
    app = app_of(max_record_bytes=100)
    batches = read_all(StdinSource(app, bspump.Pipeline(app, "P")))
    assert records(batches) == [{"a": 1}, {"a": 2}]
    assert [b.where(i) for b in batches for i in range(len(b.records))] == ["stdin:1", "stdin:5"]
    reasons = [r for _, r in dead(batches)]
    assert reasons[0] == "stdin:3: record of 2016 bytes exceeds max_record_bytes=100"
    assert reasons[1] == "stdin:4: not a JSON object (list)"
    assert reasons[2].startswith("stdin:6: record of 210 bytes")


def test_kafka_values_follow_the_record_rule() -> None:
    from bspump.kafka import decode_value
    from cluster.errors import RecordError
    from cluster.records import Limits

    limits = Limits(max_bytes=1000, max_depth=64)
    assert decode_value(b'\xef\xbb\xbf{"a": 1}', "json", limits) == {"a": 1}
    assert decode_value(msgpack.packb({"a": [1]}), "msgpack", limits) == {"a": [1]}
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    cases = {
        (b'{"x": ' + b"[" * 999 + b"]" * 999 + b"}", "json"): "max_record_bytes=1000",
        (b'{"x": ' + b"[" * 80 + b"]" * 80 + b"}", "json"): "max_record_depth=64",
        (msgpack.packb({"x": deep}), "msgpack"): "max_record_depth=64",
        (b"[1, 2]", "json"): "not a JSON object",
        (msgpack.packb([1, 2]), "msgpack"): "not a map",
        (b"\xc1", "msgpack"): "cannot decode msgpack",
        (b"", "json"): "malformed JSON",
        (b"{oops", "json"): "malformed JSON",
    }
    for (value, fmt), reason in cases.items():
        with pytest.raises(RecordError, match=reason):
            decode_value(value, fmt, limits)


def test_csv_unterminated_quote_before_quoted_rows_costs_one_row(tmp_path: Path) -> None:
    path = tmp_path / "quote.csv"
    path.write_bytes(b'user_id,n,note\nu0,0,x0\nu1,1,"never closed\nu2,2,x2\n'
                     b'u3,3,"a, b"\nu4,4,"two\nlines"\nu5,5,x5\n')
    batches = csv_read(path)
    assert records(batches) == [{"user_id": "u0", "n": 0, "note": "x0"},
                                {"user_id": "u2", "n": 2, "note": "x2"},
                                {"user_id": "u3", "n": 3, "note": "a, b"},
                                {"user_id": "u4", "n": 4, "note": "two\nlines"},
                                {"user_id": "u5", "n": 5, "note": "x5"}]
    [(_, reason)] = dead(batches)
    assert reason.startswith(f"{path}:3: row has 4 fields, header has 3")


@pytest.mark.parametrize("route", ["records", "raw"])
def test_json_lines_usable_alike_on_either_route(tmp_path: Path, route: str) -> None:
    # Python's json takes NaN and turns 1e999 into inf; the raw route's decoder does not.
    # One rule: such a record is dead on both routes.
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b'{"k": "a", "ts": 1}\n{"k": "b", "ts": 2, "x": NaN}\n'
                     b'{"k": "c", "ts": 3, "x": 1e999}\n{"k": "d", "ts": 4}\n')
    from cluster.config import PipelineSettings, ShardKeySpec
    from cluster.intake import Intake
    from cluster.layout import Layout

    intake = Intake(PipelineSettings("P", ShardKeySpec(field="k"), time_field="ts"),
                    Layout(1, 4), 60.0)
    if route == "raw":
        batches = raw_read(path)
        results = [intake.feed_raw(b.raw or [], b.where) for b in batches]
        kept = [json.loads(e)["k"] for r in results for c in r.chunks for e in c.events[0]]
    else:
        app = app_of()
        batches = read_all(FileJSONLinesSource(app, bspump.Pipeline(app, "P"), path=str(path)))
        results = [intake.feed(b.records, where=b.where) for b in batches]
        kept = [e["k"] for r in results for c in r.chunks for e in c.events[0]]
    dead_places = [reason.split(": ")[0] for _, reason in dead(batches)] + [
        d.reason.split(": ")[0] for r in results for d in r.dead]
    if route == "raw":
        # Routing skips x: 1e999 passes it and is refused by the worker's decoder, a dead
        # letter there (tests/integration/test_bad_input.py).
        assert kept == ["a", "c", "d"]
        assert dead_places == [f"{path}:2"]
    else:
        assert kept == ["a", "d"]
        assert dead_places == [f"{path}:2", f"{path}:3"]
