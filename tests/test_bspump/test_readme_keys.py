"""The README's table of built-in pieces names every key each piece reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bspump.analyzer import SessionAnalyzer, TimeWindowAnalyzer
from bspump.file import FileCSVSource, FileJSONLinesSink, FileJSONLinesSource, FileMsgpackSource
from bspump.generator import GeneratorSource
from bspump.kafka import KafkaSink, KafkaSource

README = Path(__file__).resolve().parents[2] / "README.md"
PIECES = [TimeWindowAnalyzer, SessionAnalyzer, GeneratorSource, FileJSONLinesSource,
          FileCSVSource, FileMsgpackSource, FileJSONLinesSink, KafkaSource, KafkaSink]


def _rows() -> dict[str, str]:
    rows = {}
    for line in README.read_text().splitlines():
        m = re.match(r"\| (.+?) \| (.+) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _config_keys(cls: type) -> set[str]:
    keys: set[str] = set()
    for klass in cls.__mro__:
        keys |= set(vars(klass).get("ConfigDefaults") or {})
    return keys


@pytest.mark.parametrize("cls", PIECES, ids=lambda c: c.__name__)
def test_every_config_key_is_documented(cls: type) -> None:
    rows = [keys for piece, keys in _rows().items() if f"`{cls.__name__}`" in piece]
    assert rows, f"README has no row for {cls.__name__}"
    missing = sorted(k for k in _config_keys(cls) if f"`{k}`" not in rows[0])
    assert not missing, f"{cls.__name__}: README does not name {missing}"


def test_every_cluster_pipeline_and_connection_key_is_documented() -> None:
    from bspump.kafka import CONNECTION_KEYS
    from cluster.config import CLUSTER_KEYS, PIPELINE_KEYS

    text = README.read_text()
    reference = text[text.index("## Config reference"):text.index("## Semantics")]
    missing = [k for k in [*CLUSTER_KEYS, *PIPELINE_KEYS, *CONNECTION_KEYS]
               if f"`{k}`" not in reference]
    assert not missing, f"the README's config reference does not name {missing}"
