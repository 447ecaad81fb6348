"""``cluster.logs``: text by default, one JSON object a line with --log-format json."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from cluster import logs


@pytest.fixture
def restore_root() -> Iterator[None]:
    """Leave the root logger as the test found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def capture(role: str, fmt: str | None, worker: int | None = None) -> io.StringIO:
    buf = io.StringIO()
    logs.setup(role, worker=worker, fmt=fmt, stream=buf)
    return buf


def test_text_is_the_default_with_the_old_prefixes(restore_root: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(logs.ENV, raising=False)
    buf = capture("coordinator", None)
    logging.getLogger("bspump-cluster.coordinator").info("checkpoint %d: %.1f MB in %.3f s",
                                                         3, 19.4, 0.2)
    assert buf.getvalue() == "bspump-cluster: checkpoint 3: 19.4 MB in 0.200 s\n"
    buf = capture("worker", "text", worker=1)
    logging.getLogger("bspump-cluster.worker").warning("50% done")
    assert buf.getvalue() == "worker 1: 50% done\n"


def test_json_lines_carry_role_event_and_fields(restore_root: None) -> None:
    buf = capture("coordinator", "json")
    log = logging.getLogger("bspump-cluster.coordinator")
    log.info("checkpoint %d: %.1f MB in %.3f s", 3, 19.4, 0.214,
             extra={"event": "checkpoint", "checkpoint_id": 3, "mb": 19.4, "duration_s": 0.214})
    log.info("restored checkpoint %d (%s workers -> %d)", 5, 4, 2,
             extra={"event": "rebalance", "checkpoint_id": 5, "workers_before": 4, "workers": 2})
    log.warning("dead letters: %d in the last 10 s (%d in all) -> %s", 12, 40, "/o/dl.jsonl",
                extra={"event": "dead_letter_rate", "dead_letters_10s": 12,
                       "dead_letters_total": 40, "path": "/o/dl.jsonl"})
    log.info("something new, %s", "unlisted", extra={"event": "custom", "rows": 3})
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert len(lines) == 4
    cp, rebalance, dead, custom = lines
    assert cp["role"] == "coordinator" and cp["level"] == "info" and cp["pid"] > 0
    assert cp["time"].endswith("Z") and "T" in cp["time"]
    assert cp["event"] == "checkpoint" and cp["checkpoint_id"] == 3
    assert cp["duration_s"] == 0.214 and cp["message"] == "checkpoint 3: 19.4 MB in 0.214 s"
    assert rebalance["event"] == "rebalance"
    assert (rebalance["workers_before"], rebalance["workers"]) == (4, 2)
    assert dead["event"] == "dead_letter_rate" and dead["level"] == "warning"
    assert dead["dead_letters_10s"] == 12 and dead["dead_letters_total"] == 40
    assert custom["event"] == "custom" and custom["rows"] == 3
    assert custom["message"] == "something new, unlisted"


def test_the_environment_passes_the_choice_to_child_processes(
        restore_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.ENV, "json")
    buf = capture("worker", None, worker=2)
    logging.getLogger("bspump-cluster.worker").error(
        "%s (pid %d) died: %s", "worker 1", 42, "killed by SIGKILL",
        extra={"event": "restart", "process_": "worker 1", "exit": "killed by SIGKILL"})
    line = json.loads(buf.getvalue())
    assert line["role"] == "worker" and line["worker"] == 2
    assert line["event"] == "restart" and line["pid"] > 0 and line["pid"] != 42
    assert line["process"] == "worker 1" and line["exit"] == "killed by SIGKILL"
    monkeypatch.setenv(logs.ENV, "nonsense")
    assert logs.log_format() == "text"


def test_an_exception_is_one_json_line(restore_root: None) -> None:
    buf = capture("supervisor", "json")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("bspump-cluster").exception("failed")
    out = buf.getvalue()
    assert out.count("\n") == 1
    line = json.loads(out)
    assert "ValueError: boom" in line["exception"] and line["level"] == "error"


def test_a_partition_task_tags_its_lines_with_the_partition(
        restore_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.TASK_ENV, "events:3")
    buf = capture("worker", "text", worker=0)
    logging.getLogger("bspump-cluster.worker").info("hello")
    assert buf.getvalue() == "worker 0 [events:3]: hello\n"
    buf = capture("coordinator", "json")
    logging.getLogger("bspump-cluster.coordinator").info(
        "partition %s resumes from checkpoint %d written by %s%s", "events:3", 7, "h1:42", "",
        extra={"event": "partition_resume", "checkpoint_id": 7, "written_by": "h1:42"})
    line = json.loads(buf.getvalue())
    assert line["partition"] == "events:3" and line["event"] == "partition_resume"
    assert line["checkpoint_id"] == 7 and line["written_by"] == "h1:42"


def test_every_log_line_of_info_and_above_names_its_event() -> None:
    """JSON logs are read by event: each info, warning or error call passes one with extra."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    missing = []
    for package in ("bspump", "cluster", "coordinator", "workers"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("info", "warning", "error", "critical")
                        and isinstance(node.func.value, ast.Name)
                        and node.func.value.id in ("log", "logger")):
                    continue
                extra = next((k.value for k in node.keywords if k.arg == "extra"), None)
                names = {k.value for k in extra.keys if isinstance(k, ast.Constant)} \
                    if isinstance(extra, ast.Dict) else set()
                # A dict built elsewhere (``extra=fields``) is trusted to hold its event.
                if extra is None or (isinstance(extra, ast.Dict) and "event" not in names
                                     and None not in extra.keys):
                    missing.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not missing, f"log calls without an event: {missing}"
