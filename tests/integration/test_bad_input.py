"""Realistic bad input through real runs: each bad record costs that record alone.

Every run is a real ``bspump-cluster run`` (coordinator and worker processes, ZeroMQ,
shared memory). Its results are compared with tests/reference.py over the good records
only, its dead letters with the bad ones, and its ledger is checked: every record read
is routed, late or dead, and every routed record is processed or dead on its worker.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIGS, ROOT, SEED_CONFIG, Run, make_lines, run_config
from tests.integration.checks import assert_results_match
from tests.reference import compute

DEEP = 1000


def write_config(tmp_path: Path, data: Path, extra: str = "") -> Path:
    cfg = tmp_path / "seed.ini"
    cfg.write_text(SEED_CONFIG.format(configs=CONFIGS, input=data,
                                      persistent=tmp_path / "persistent.npy") + extra)
    return cfg


def assert_ledger(run: Run) -> list[dict[str, Any]]:
    """The ledger closes, counted here from the output files: records read = late +
    dead letters of input records + events the workers took in. Returns those dead
    letters (a processor's failures are dead letters of events taken in)."""
    summary = run.summary()
    dead = run.jsonl("dead-letters.jsonl")
    at_intake = [d for d in dead if "worker" not in d]
    at_worker = [d for d in dead if "worker" in d and d.get("processor") is None]
    late = run.jsonl("late-events.jsonl")
    assert summary["records_read"] == len(late) + len(at_intake) + summary["events_processed"]
    assert summary["ledger"]["closes"], summary["ledger"]
    assert summary["ledger"]["dead"] == len(dead)
    return at_intake + at_worker


def with_bad(lines: list[str], bad: dict[int, bytes]) -> tuple[bytes, dict[int, int]]:
    """The good lines with bad ones inserted before the given indexes; (file, line numbers
    of the bad records keyed by index)."""
    out: list[bytes] = []
    where: dict[int, int] = {}
    for i, line in enumerate(lines):
        if i in bad:
            out.append(bad[i])
            where[i] = len(out)
        out.append(line.encode())
    return b"\n".join(out) + b"\n", where


def record(lines: list[str], i: int, **more: Any) -> bytes:
    """A usable record next to line ``i`` (its key and time), with more fields."""
    base = json.loads(lines[i])
    text = json.dumps({"user_id": "u1", "type": "type1", "timestamp": base["timestamp"],
                       "value": 1.0, "latitude": 1.0, "longitude": -1.0})
    return text[:-1].encode() + b"".join(b', "%s": %s' % (k.encode(), v)
                                         for k, v in more.items()) + b"}"


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return make_lines(3000)


@pytest.mark.parametrize("workers", [2, None], ids=["2 workers", "in-process"])
def test_nested_json_costs_that_record_alone(lines: list[str], tmp_path: Path,
                                             workers: int | None) -> None:
    bad = {100: record(lines, 100, x=b"[" * DEEP + b"]" * DEEP),
           1500: record(lines, 1500, x=b"[" * 70 + b"]" * 70)}
    data, where = with_bad(lines, bad)
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + data)  # and a byte-order mark: it costs nothing
    run = run_config(write_config(tmp_path, path), tmp_path / "out", workers=workers,
                     in_process=workers is None)
    assert run.returncode == 0, run.stderr[-3000:]
    ref = compute(lines, lateness=30)
    ref.dead_input += len(bad)
    assert_results_match(run, ref)
    dead = assert_ledger(run)
    reasons = {d["reason"] for d in dead}
    for i in bad:
        assert f"{path}:{where[i]}: record nests deeper than max_record_depth=64" in reasons
    assert all(len(d["record"]) < 600 for d in dead if isinstance(d["record"], str))


def test_bytes_routing_skips_cost_that_record_alone(lines: list[str], tmp_path: Path) -> None:
    # The coordinator decodes only the key and the time: what it skips (bad UTF-8, a
    # number out of range) fails on the worker, which must drop that record alone.
    bad = {200: record(lines, 200, note=b'"caf\xe9"'),
           900: record(lines, 900, x=b"1e999")}
    # Late as well as undecodable: written to the late events all the same.
    late = json.loads(record(lines, 1200))
    late["timestamp"] -= 3600
    bad[1200] = json.dumps(late).encode()[:-1] + b', "note": "caf\xe9"}'
    data, _ = with_bad(lines, bad)
    path = tmp_path / "input.jsonl"
    path.write_bytes(data)
    run = run_config(write_config(tmp_path, path), tmp_path / "out", workers=2)
    assert run.returncode == 0, run.stderr[-3000:]
    dead = assert_ledger(run)
    at_worker = [d for d in dead if "worker" in d]
    assert len(at_worker) == 2
    assert all("malformed JSON" in d["reason"] for d in at_worker)
    # Every other record went through: the input's own bad records, and these two.
    ref = compute(lines, lateness=30)
    summary = run.summary()
    # Taken in by a worker and dead there, as an event a processor raised on.
    assert summary["events_processed"] == len(ref.accepted) + 2
    assert summary["ledger"]["processed"] == len(ref.accepted) - ref.geo_failures
    assert summary["late_events"] == ref.late + 1
    assert any(isinstance(e["record"], str) and "caf\ufffd" in e["record"]
               for e in run.jsonl("late-events.jsonl"))


def test_stdin_per_record_route(lines: list[str], tmp_path: Path) -> None:
    bad = {50: record(lines, 50, x=b"[" * DEEP + b"]" * DEEP)}
    data, where = with_bad(lines, bad)
    cfg = write_config(tmp_path, tmp_path / "unused.jsonl").read_text().replace(
        "source = bspump.file:FileJSONLinesSource", "source = bspump.common:StdinSource"
    ).replace(":FileJSONLinesSource]", ":StdinSource]"
              ).replace(f"path = {tmp_path / 'unused.jsonl'}\n", "")
    (tmp_path / "stdin.ini").write_text(cfg)
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "cluster", "run", str(tmp_path / "stdin.ini"),
                        "--output-dir", str(out), "--workers", "2"], input=data,
                       capture_output=True, timeout=180, cwd=ROOT, check=False)
    run = Run(p.returncode, p.stdout.decode(), p.stderr.decode(), out)
    assert run.returncode == 0, run.stderr[-3000:]
    ref = compute(lines, lateness=30)
    ref.dead_input += 1
    assert_results_match(run, ref)
    dead = assert_ledger(run)
    assert f"stdin:{where[50]}: record nests deeper than max_record_depth=64" in \
        {d["reason"] for d in dead}


def csv_input(n: int = 3000) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Good events and their CSV rows (numbers only in number columns)."""
    events = []
    for line in make_lines(n, seed=11):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and isinstance(e.get("timestamp"), float) and "user_id" in e:
            events.append(e)
    rows = []
    for e in events:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(
            [e["user_id"], e["type"], e["timestamp"], e["value"], e["latitude"],
             e["longitude"]])
        rows.append(buf.getvalue().encode())
    return events, rows


def test_csv_bad_rows_cost_those_rows_alone(tmp_path: Path) -> None:
    events, rows = csv_input()
    header = b"user_id,type,timestamp,value,latitude,longitude\n"
    t = events[400]["timestamp"]
    bad_rows = {
        300: b"u3,typ\xe9,%r,1,1,-1\n" % t,             # invalid UTF-8
        1200: b'u4,type1,%r,1,1,-1,"never closed\n' % t,  # an unterminated quote
    }
    big = {800: b'u5,"%s",%r,1,1,-1\n' % (b"y" * (200 * 1024), events[800]["timestamp"])}
    out: list[bytes] = []
    bad_lines = []
    kept = []
    for i, row in enumerate(rows):
        if i in bad_rows:
            out.append(bad_rows[i])
            bad_lines.append(len(out) + 1)
        if i in big:  # a 200 KiB field is fine below max_record_bytes (1 MiB)
            out.append(big[i])
            kept.append({"user_id": "u5", "type": "y" * (200 * 1024),
                         "timestamp": events[800]["timestamp"], "value": 1, "latitude": 1,
                         "longitude": -1})
        out.append(row)
        kept.append(events[i])
    path = tmp_path / "input.csv"
    path.write_bytes(b"\xef\xbb\xbf" + header + b"".join(out))
    cfg = write_config(tmp_path, path).read_text().replace(
        "source = bspump.file:FileJSONLinesSource", "source = bspump.file:FileCSVSource"
    ).replace(":FileJSONLinesSource]", ":FileCSVSource]")
    (tmp_path / "csv.ini").write_text(cfg)
    run = run_config(tmp_path / "csv.ini", tmp_path / "out", workers=2)
    assert run.returncode == 0, run.stderr[-3000:]
    ref = compute([json.dumps(e) for e in kept], lateness=30)
    ref.dead_input += len(bad_rows)
    assert_results_match(run, ref)
    dead = assert_ledger(run)
    places = sorted(int(d["reason"].split(": ", 1)[0].rsplit(":", 1)[1]) for d in dead
                    if "worker" not in d)
    assert places == bad_lines
