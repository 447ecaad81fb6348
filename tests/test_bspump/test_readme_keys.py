"""The documentation says what the code does, and holds together.

- ``docs/configuration.md`` has a row for every config key the code reads (and none it
  does not read), with the default the code uses;
- the README's two commands are the ones CI runs (``.ci/run``);
- every event a log call names is in ``docs/observability.md``'s table;
- every relative link in README.md, CONTRIBUTING.md and ``docs/*.md`` reaches a file,
  and a heading of it when the link names one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bspump.analyzer import SessionAnalyzer, TimeWindowAnalyzer
from bspump.anomaly import KeyedAnomalyDetector
from bspump.common import StdinSource
from bspump.file import FileCSVSource, FileJSONLinesSink, FileJSONLinesSource, FileMsgpackSource
from bspump.generator import GeneratorSource
from bspump.kafka import CONNECTION_KEYS, KafkaSink, KafkaSource
from cluster.config import CLUSTER_KEYS, PIPELINE_KEYS, Config, load_cluster_settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
DOCS = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pieces with a table of their own keys in docs/configuration.md.
PIECES = [TimeWindowAnalyzer, SessionAnalyzer, KeyedAnomalyDetector, GeneratorSource,
          FileJSONLinesSource, FileCSVSource, FileMsgpackSource, FileJSONLinesSink,
          KafkaSource, KafkaSink]

_ROW = re.compile(r"^\| `([^`]+)` \| (.*?) \| (.*) \|$")


def _headed(text: str, level: int) -> dict[str, str]:
    """Heading -> the text under it, down to the next heading of this level or higher."""
    parts: dict[str, str] = {}
    heading, body = "", []
    marks = tuple("#" * n + " " for n in range(1, level + 1))
    fenced = False
    for line in text.splitlines():
        fenced ^= line.startswith("```")
        if line.startswith(marks) and not fenced:
            parts[heading] = "\n".join(body)
            heading, body = line.lstrip("#").strip(), []
        else:
            body.append(line)
    parts[heading] = "\n".join(body)
    return parts


def _rows(body: str) -> dict[str, str]:
    """The ``| `key` | default | meaning |`` rows of a section: key -> default."""
    return {m.group(1): m.group(2) for line in body.splitlines() if (m := _ROW.match(line))}


def _section(level: int, name: str) -> dict[str, str]:
    found = [body for heading, body in _headed(CONFIG_DOC.read_text(), level).items()
             if f"`{name}`" in heading]
    assert len(found) == 1, f"docs/configuration.md has {len(found)} sections naming {name}"
    return _rows(found[0])


def _config_keys(cls: type) -> dict[str, Any]:
    """Every key a piece reads, with its default (the most derived class wins)."""
    keys: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        keys.update(vars(klass).get("ConfigDefaults") or {})
    return keys


def _says(cell: str, value: Any) -> bool:
    """Whether a documented default cell states ``value``."""
    if isinstance(value, bool):
        return cell == f"`{'yes' if value else 'no'}`"
    if isinstance(value, (int, float)):
        m = re.match(r"-?\d[\d,]*(\.\d+)?", cell)
        return m is not None and float(m.group().replace(",", "")) == float(value)
    if value == "":
        return cell in ("none", "required")
    return cell == f"`{value}`"


@pytest.mark.parametrize("cls", PIECES, ids=lambda c: c.__name__)
def test_every_key_of_a_piece_is_documented_with_its_default(cls: type) -> None:
    heading = [h for h in _headed(CONFIG_DOC.read_text(), 3) if f"`{cls.__name__}`" in h]
    assert len(heading) == 1, f"docs/configuration.md has no section for {cls.__name__}"
    rows = _rows(_headed(CONFIG_DOC.read_text(), 3)[heading[0]])
    keys = _config_keys(cls)
    missing = sorted(set(keys) - set(rows))
    assert not missing, f"docs/configuration.md does not document {cls.__name__}'s {missing}"
    wrong = {k: (rows[k], v) for k, v in keys.items() if not _says(rows[k], v)}
    assert not wrong, f"{cls.__name__}: documented default vs the code's: {wrong}"
    # A shared table (the file sources) documents the union of its classes' keys.
    sharing = [p for p in PIECES if f"`{p.__name__}`" in heading[0]]
    known = set().union(*(_config_keys(p) for p in sharing))
    stale = sorted(set(rows) - known)
    assert not stale, f"docs/configuration.md documents keys {cls.__name__} does not read: {stale}"


@pytest.mark.parametrize("section, keys", [("[cluster]", CLUSTER_KEYS),
                                           ("[pipeline:ID]", PIPELINE_KEYS),
                                           ("[connection:NAME]", CONNECTION_KEYS)])
def test_every_cluster_pipeline_and_connection_key_is_documented(section: str,
                                                                  keys: Any) -> None:
    rows = _section(2, section)
    missing = sorted(set(keys) - set(rows))
    assert not missing, f"docs/configuration.md {section} does not document {missing}"
    stale = sorted(set(rows) - set(keys))
    assert not stale, f"docs/configuration.md {section} documents unknown keys {stale}"


def test_documented_cluster_defaults_are_what_the_loader_uses(tmp_path: Path) -> None:
    # The settings of a config that sets nothing but the required keys: the defaults.
    cfg = Config.from_string("[cluster]\npipeline = m:P\n[pipeline:P]\nshard_key = k\n")
    s = load_cluster_settings(cfg, tmp_path / "c.ini")
    used = {"key_groups": s.key_groups, "output_dir": str(s.output_dir),
            "batch_size": s.batch_size, "max_record_bytes": s.max_record_bytes,
            "max_record_depth": s.max_record_depth, "progress": s.progress,
            "checkpoint_interval": s.checkpoint_interval,
            "checkpoint_events": s.checkpoint_events, "checkpoints_kept": s.checkpoints_kept,
            "max_restarts": s.max_restarts, "worker_timeout": s.worker_timeout,
            "http_public": False, "file_mode": f"{s.file_mode:04o}", "tasks": s.tasks}
    rows = _section(2, "[cluster]")
    wrong = {k: (rows[k], v) for k, v in used.items() if not _says(rows[k], v)}
    assert not wrong, f"[cluster]: documented default vs the loader's: {wrong}"
    assert s.http is None and rows["http"] == "off"
    assert s.checkpoint_dir == s.output_dir / "checkpoints"
    r = s.routing
    used = {"allowed_lateness": r.allowed_lateness, "max_time_jump": r.max_time_jump,
            "time_jump_confirm": r.time_jump_confirm,
            "late_warning_share": r.late_warning_share}
    rows = _section(2, "[pipeline:ID]")
    wrong = {k: (rows[k], v) for k, v in used.items() if not _says(rows[k], v)}
    assert not wrong, f"[pipeline:ID]: documented default vs the loader's: {wrong}"


def test_the_stdin_source_reads_only_what_the_doc_says() -> None:
    # Documented in prose ("batch, default 1000"), not in a table of its own.
    assert _config_keys(StdinSource) == {"batch": 1000}
    assert "`batch`, default 1000" in CONFIG_DOC.read_text()


def _commands(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", text, re.S)


def test_the_readme_commands_are_the_ones_ci_runs() -> None:
    """The README's first two commands set up and run the demo, then the tests; CI runs
    the same steps on a fresh machine, so a README command that stops working fails CI."""
    demo, tests = _commands(README.read_text())[:2]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "\n" not in demo and "\n" not in tests, "each is one line, to paste"
    *_, run_demo = demo.split(" && ")
    *setup, run_tests = tests.split(" && ")
    assert run_demo == ".venv/bin/bspump-cluster run configs/demo.ini"
    assert any(line.startswith(run_demo + " ") for line in ci), ".ci/run does not run the demo"
    assert run_tests in ci, f".ci/run does not run {run_tests!r}"
    assert setup[0] == "python3 -m venv .venv" and setup[0] in ci
    assert setup[1] in ci, f".ci/run does not install as the README says: {setup[1]!r}"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        slug = _slug(line.lstrip("#"))
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_heading(doc: Path) -> None:
    broken = []
    for target in _links(doc):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        name, _, anchor = target.partition("#")
        dest = (doc.parent / name).resolve() if name else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: {dest.name} has no heading #{anchor}")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


def _logged_events() -> set[str]:
    """Every event name a log call of the four packages passes with ``extra=``."""
    import ast

    names: set[str] = set()
    for package in ("bspump", "cluster", "coordinator", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Dict):
                    for key, value in zip(node.keys, node.values, strict=True):
                        if (isinstance(key, ast.Constant) and key.value == "event"
                                and isinstance(value, ast.Constant)):
                            names.add(value.value)
    return names


def test_every_logged_event_is_in_the_observability_table() -> None:
    table = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    events = _logged_events()
    assert len(events) > 30
    undocumented = sorted(e for e in events if f"`{e}`" not in table)
    assert not undocumented, f"docs/observability.md does not list the events {undocumented}"
