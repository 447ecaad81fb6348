"""The one record rule: depth, previews, places; and property tests of every parser.

The property tests feed the sources and the intake random records, bytes, depths,
encodings and sizes, and check two things against an expectation built here from how
each line was made: the ledger closes (every line that is not blank is accepted, late
or dead, exactly once) and only the bad records are lost.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bspump
from bspump.file import FileCSVSource, FileJSONLinesSource, FileMsgpackSource
from bspump.processor import Source, SourceBatch
from cluster.config import Config, PipelineSettings, ShardKeySpec
from cluster.intake import Intake, IntakeResult
from cluster.layout import Layout
from cluster.records import (
    BOM,
    PREVIEW_CHARS,
    Limits,
    batch_may_be_too_deep,
    depth_exceeds,
    json_depth,
    line_place,
    offset_place,
    preview,
    too_deep,
)

T0 = 1767225600.0
LIMITS = Limits(max_bytes=2048, max_depth=64)


def reference_depth(value: Any) -> int:
    """Nesting of a decoded value, written plainly (recursive)."""
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.characters(
        codec="utf-8"), max_size=8) | st.sampled_from(["[", "]", "{", "}", '"', "\\", '\\"]']),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=30)


@given(json_values)
def test_json_depth_matches_the_decoded_value(value: Any) -> None:
    text = json.dumps(value).encode()
    assert json_depth(text) == reference_depth(value)
    assert depth_exceeds(value, 3) == (reference_depth(value) > 3)


@given(st.integers(1, 3000))
def test_too_deep_at_any_depth(depth: int) -> None:
    raw = b'{"x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    assert json_depth(raw) == depth
    assert too_deep(raw, LIMITS) == (depth > 64)


@given(st.lists(st.integers(1, 100), min_size=1, max_size=20))
def test_the_batch_bound_never_misses_a_deep_record(depths: list[int]) -> None:
    lines = [b'{"a": ' + b"[" * (d - 1) + b"]" * (d - 1) + b"}" for d in depths]
    joined = b"[" + b",".join(lines) + b"]"
    if max(depths) > 64:
        assert batch_may_be_too_deep(joined, len(lines), LIMITS)
    if all(d == 1 for d in depths):
        assert not batch_may_be_too_deep(joined, len(lines), LIMITS)


def test_preview_has_one_fixed_length() -> None:
    assert preview(b'{"a": 1}\r\n') == '{"a": 1}'
    long = preview(b"x" * 5000)
    assert long == "x" * PREVIEW_CHARS + "... (5000 bytes)"
    assert preview("é" * 600) == "é" * PREVIEW_CHARS + "... (600 characters)"
    assert preview(b"\xff" * 3) == "\ufffd" * 3
    # Multi-byte characters: still PREVIEW_CHARS characters, cut at a character.
    assert preview("€".encode() * 600).startswith("€" * PREVIEW_CHARS + "...")


def test_places() -> None:
    assert line_place("in.jsonl", 7) == "in.jsonl:7"
    assert offset_place("events", 3, 120) == "events:3@120"


# -- property tests: random input through the sources and the intake -----------------------


def make_intake() -> Intake:
    routing = PipelineSettings("P", ShardKeySpec(field="k"), time_field="ts",
                               allowed_lateness=1e9)  # nothing late: every loss is a bug
    return Intake(routing, Layout(2, 16), 60.0, LIMITS)


def app_of() -> bspump.Application:
    run = bspump.RunInfo(role="coordinator", run_id="t", max_record_bytes=LIMITS.max_bytes,
                         max_record_depth=LIMITS.max_depth)
    return bspump.Application(Config.from_string(""), run=run)


def read_all(source: Source) -> list[SourceBatch]:
    async def collect() -> list[SourceBatch]:
        return [b async for b in source.batches()]

    return asyncio.run(collect())


def route(batches: list[SourceBatch]) -> tuple[list[Any], list[str], int]:
    """What the coordinator does with each batch: (accepted, dead reasons, records read)."""
    intake = make_intake()
    accepted: list[Any] = []
    dead: list[str] = []
    read = 0
    for b in batches:
        read += len(b) + len(b.dead)
        dead += [reason for _, reason in b.dead]
        result: IntakeResult = (intake.feed_raw(b.raw, b.where) if b.raw is not None
                                else intake.feed(b.records, where=b.where))
        dead += [r.reason for r in result.dead]
        assert not result.late
        for chunk in result.chunks:
            for events in chunk.events:
                accepted += events
    return accepted, dead, read


def good_record(i: int, note: str) -> dict[str, Any]:
    return {"k": f"u{i % 7}", "ts": T0 + i, "note": note}


@st.composite
def json_line(draw: st.DrawFn, i: int) -> tuple[str, bytes, dict[str, Any] | None]:
    """(kind, line, the record it must give or None)."""
    kind = draw(st.sampled_from(["good", "good", "good", "bom", "nested", "malformed",
                                 "bytes", "not_object", "blank", "oversize", "no_key",
                                 "bad_time"]))
    record = good_record(i, draw(st.text(max_size=20)))
    line = json.dumps(record, ensure_ascii=draw(st.booleans())).encode()
    if kind == "good":
        return kind, line, record
    if kind == "bom":
        return kind, BOM + line, record
    if kind == "nested":
        arrays = draw(st.integers(1, 1500))  # inside the object: depth arrays + 1
        text = line[:-1] + b', "x": ' + b"[" * arrays + b"]" * arrays + b"}"
        if arrays + 1 > LIMITS.max_depth or len(text) > LIMITS.max_bytes:
            return kind, text, None
        return kind, text, {**record, "x": json.loads("[" * arrays + "]" * arrays)}
    if kind == "malformed":
        return kind, line[: draw(st.integers(1, len(line) - 1))], None
    if kind == "bytes":
        # Bytes that cannot start JSON, then anything but a line end.
        tail = draw(st.binary(max_size=40)).replace(b"\n", b"")
        return kind, draw(st.sampled_from([b"\xff", b"\x80", b"}", b"x"])) + tail, None
    if kind == "not_object":
        return kind, json.dumps(draw(st.lists(st.integers(), max_size=3) | st.integers()
                                     | st.text(max_size=5))).encode(), None
    if kind == "blank":
        return kind, draw(st.sampled_from([b"", b" ", b"\t", b"\r", b"  \r"])), None
    if kind == "oversize":
        return kind, json.dumps({**record, "pad": "p" * LIMITS.max_bytes}).encode(), None
    if kind == "no_key":
        return kind, json.dumps({"ts": T0 + i}).encode(), None
    return kind, json.dumps({"k": "u", "ts": draw(st.sampled_from(
        ["yesterday", None, -5, 1e20, [1]]))}).encode(), None


SLOW = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SLOW
@given(st.integers(0, 40).flatmap(lambda n: st.tuples(*[json_line(i) for i in range(n)])),
       st.sampled_from(["records", "raw"]), st.integers(1, 7),
       st.sampled_from([b"\n", b"\r\n"]), st.booleans())
def test_json_lines_lose_only_bad_records(lines: tuple[tuple[str, bytes, Any], ...], mode: str,
                                          batch: int, newline: bytes, final: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.jsonl"
        path.write_bytes(newline.join(line for _, line, _ in lines)
                         + (newline if lines and final else b""))
        app = app_of()

        class Source(FileJSONLinesSource):
            RAW_CHUNK = 64  # chunks end inside lines

        src = Source(app, bspump.Pipeline(app, "P"), path=str(path), config={"batch": batch})
        src.want_raw = mode == "raw"
        accepted, dead, read = route(read_all(src))
    if mode == "raw":
        accepted = [json.loads(x) for x in accepted]
    expected = [r for _, _, r in lines if r is not None]
    blank = [n for n, (_, line, _) in enumerate(lines, 1) if not line.strip()]
    bad = [n for n, (_, _, r) in enumerate(lines, 1) if r is None and n not in blank]
    # The ledger closes: every line that is not blank is read once, accepted or dead.
    assert read == len(lines) - len(blank)
    assert len(accepted) + len(dead) == read
    # Only the bad records are lost, and each dead letter names its line.
    assert sorted(accepted, key=lambda r: r["ts"]) == expected
    assert sorted(int(reason.split(": ", 1)[0].rsplit(":", 1)[1]) for reason in dead) == bad


@st.composite
def csv_row(draw: st.DrawFn, i: int) -> tuple[str, bytes, dict[str, Any] | None]:
    """(kind, the row's bytes, the record it must give or None)."""
    kind = draw(st.sampled_from(["good", "good", "good", "quoted", "bad_bytes", "width",
                                 "blank", "oversize"]))
    note = draw(st.text(alphabet=st.sampled_from('ab ,"\n€'), max_size=12)
                if kind == "quoted" else st.text(alphabet="abc xyz", max_size=8))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([f"u{i}", i, note])
    line = out.getvalue().encode()
    if kind in ("good", "quoted"):
        return kind, line, {"k": f"u{i}", "ts": str(i), "note": note}
    if kind == "bad_bytes":
        return kind, f"u{i},{i},".encode() + b"caf\xe9\n", None
    if kind == "width":
        return kind, f"u{i},{i}\n".encode(), None
    if kind == "blank":
        return kind, b"\n", None
    return kind, f"u{i},{i},{'o' * LIMITS.max_bytes}\n".encode(), None


@SLOW
@given(st.integers(0, 30).flatmap(lambda n: st.tuples(*[csv_row(i) for i in range(n)])),
       st.booleans(), st.booleans(), st.integers(1, 7))
def test_csv_loses_only_bad_rows(rows: tuple[tuple[str, bytes, Any], ...], bom: bool,
                                 unterminated: bool, batch: int) -> None:
    text = (BOM if bom else b"") + b"k,ts,note\n" + b"".join(line for _, line, _ in rows)
    if unterminated:
        # A quote never closed on the last row costs that row; the line after it is read
        # again as a row of its own (two fields: dead too).
        text += b'u_end,1,"never closed\nlast,line\n'
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.csv"
        path.write_bytes(text)
        app = app_of()
        src = FileCSVSource(app, bspump.Pipeline(app, "P"), path=str(path),
                            config={"batch": batch, "convert_numbers": False})
        accepted, dead, read = route(read_all(src))
    expected = [r for _, _, r in rows if r is not None]
    assert sorted(accepted, key=lambda r: int(r["ts"])) == expected
    starts, n = [], 2  # the line each row starts on: the header is line 1
    for kind, line, _ in rows:
        starts.append((kind, n))
        n += line.count(b"\n")
    bad = [n for kind, n in starts if kind in ("bad_bytes", "width", "oversize")]
    if unterminated:
        bad += [n, n + 1]
    assert sorted(int(reason.split(": ", 1)[0].rsplit(":", 1)[1]) for reason in dead) == bad
    assert len(accepted) + len(dead) == read


@SLOW
@given(st.lists(st.one_of(
    st.tuples(st.just("good"), st.integers(0, 1000)),
    st.tuples(st.just("nested"), st.integers(1, 300)),
    st.tuples(st.just("not_map"), st.integers(0, 5))), max_size=30))
def test_msgpack_loses_only_bad_records(items: list[tuple[str, int]]) -> None:
    data = b""
    expected = []
    for i, (kind, n) in enumerate(items):
        record: Any = {"k": f"u{n}", "ts": T0 + i}
        if kind == "nested":
            inner: Any = 0
            for _ in range(n - 1):
                inner = [inner]
            record["x"] = inner
            # msgpack's own encoder refuses past 511 levels: such a value is never made.
            if n > 500:
                continue
            if n <= LIMITS.max_depth:
                expected.append(record)
        elif kind == "not_map":
            record = [n]
        else:
            expected.append(record)
        data += msgpack.packb(record)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.msgpack"
        path.write_bytes(data)
        app = app_of()
        accepted, dead, read = route(read_all(FileMsgpackSource(app, bspump.Pipeline(app, "P"),
                                                                path=str(path))))
    assert sorted(accepted, key=lambda r: r["ts"]) == expected
    assert len(accepted) + len(dead) == read


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252"])
def test_csv_encodings(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "enc.csv"
    path.write_bytes("k,note\nu1,café\nu2,naïve\n".encode(encoding))
    app = app_of()
    got = [r for b in read_all(FileCSVSource(app, bspump.Pipeline(app, "P"), path=str(path),
                                             config={"encoding": encoding}))
           for r in b.records]
    assert got == [{"k": "u1", "note": "café"}, {"k": "u2", "note": "naïve"}]


def test_csv_refuses_an_encoding_it_cannot_split_into_lines(tmp_path: Path) -> None:
    from cluster.errors import ConfigError

    path = tmp_path / "enc.csv"
    path.write_bytes("k\nu1\n".encode("utf-16"))
    app = app_of()
    with pytest.raises(ConfigError, match="ASCII-compatible"):
        read_all(FileCSVSource(app, bspump.Pipeline(app, "P"), path=str(path),
                               config={"encoding": "utf-16"}))


def test_max_record_depth_is_read_from_the_cluster_section(tmp_path: Path) -> None:
    from cluster.config import load_cluster_settings
    from cluster.errors import ConfigError

    def settings_of(extra: str) -> Any:
        text = f"[cluster]\npipeline = m:P\n{extra}\n[pipeline:P]\nshard_key = k\n"
        return load_cluster_settings(Config.from_string(text, name="c.ini"),
                                     tmp_path / "c.ini")

    assert settings_of("").max_record_depth == 64
    assert settings_of("max_record_depth = 8").max_record_depth == 8
    with pytest.raises(ConfigError, match="max_record_depth"):
        settings_of("max_record_depth = 0")
    with pytest.raises(ConfigError, match="max_record_depth"):
        settings_of("max_record_depth = 1000")  # msgpack carries at most 511 levels


def test_a_smaller_max_record_depth_applies_to_every_route() -> None:
    limits = Limits(max_bytes=1 << 20, max_depth=3)
    routing = PipelineSettings("P", ShardKeySpec(field="k"), time_field="ts")
    intake = Intake(routing, Layout(1, 4), 60.0, limits)
    ok = b'{"k": "a", "ts": %r, "x": [[1]]}' % T0
    deep = b'{"k": "a", "ts": %r, "x": [[[1]]]}' % T0
    result = intake.feed_raw([ok, deep], lambda i: f"f:{i + 1}")
    assert result.accepted == 1
    assert [d.reason for d in result.dead] == ["f:2: record nests deeper than max_record_depth=3"]
    result = intake.feed([json.loads(ok), json.loads(deep)], where=lambda i: f"f:{i + 1}")
    assert [d.reason for d in result.dead] == ["f:2: record nests deeper than max_record_depth=3"]
