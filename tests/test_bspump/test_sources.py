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
    assert dead(batches)[1][0] == [1, 2, 3]


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
    assert f"record at byte {len(good[0])} is not a map" in reasons[0]
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
