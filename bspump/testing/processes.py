"""``workers >= 1``: the real cluster, started as ``python -m cluster run``, read back.

Events go to the cluster as a JSON-lines file its ``FileJSONLinesSource`` reads; what
reaches the sink is written by ``FileJSONLinesSink``, one file per worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bspump.testing.result import PipelineResult, RunFailed, plain

# Where the cluster writes what TestingSink would collect (one file per worker).
SINK_FILE = "testing-sink.jsonl"
INPUT_FILE = "testing-input.jsonl"
FILE_SOURCE = "bspump.file:FileJSONLinesSource"


def import_root(cls: type) -> tuple[str, Path]:
    """``module:Class`` of a pipeline class, and the folder to import its module from."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if cls.__module__ == "__main__" or file is None or "<locals>" in cls.__qualname__:
        raise ValueError(f"{cls.__qualname__}: a cluster imports the pipeline by name; define "
                         "it at the top level of an importable module")
    depth = cls.__module__.count(".")
    root = Path(file).resolve().parents[depth]
    if Path(file).name == "__init__.py":
        root = root.parent
    return f"{cls.__module__}:{cls.__qualname__}", root


def _jsonl(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def _decoded(dead: dict[str, Any]) -> dict[str, Any]:
    """A dead letter the cluster refused before any processor keeps the input line as
    text: give back the event it was, as the in-process run does (a cut one stays text)."""
    record = dead.get("record")
    if dead.get("processor") is None and isinstance(record, str):
        try:
            dead["record"] = json.loads(record)
        except ValueError:
            pass
    return dead


def _read_output(out: Path, pipeline_id: str, workers: int, stdout: str) -> PipelineResult:
    """A finished cluster run's output folder, as a PipelineResult."""
    result = PipelineResult(workers=workers, stdout=stdout, output_dir=out,
                            summary=json.loads((out / "summary.json").read_text()))
    for kind, target in (("windows", result.windows), ("sessions", result.sessions),
                         ("anomalies", result.anomalies)):
        for path in sorted(out.glob(f"{pipeline_id}.*.{kind}.jsonl")):
            target[path.name[len(pipeline_id) + 1:-len(f".{kind}.jsonl")]] = _jsonl(path)
    for path in sorted(out.glob("*.npy")):
        result.matrices[path.stem] = np.load(path, allow_pickle=False)
    stem, suffix = SINK_FILE.rsplit(".", 1)
    for w in range(workers):
        result.sink.extend(_jsonl(out / f"{stem}.w{w}.{suffix}"))
    result.dead_letters = [_decoded(d) for d in _jsonl(out / "dead-letters.jsonl")]
    result.late_events = _jsonl(out / "late-events.jsonl")
    return result


def write_config(folder: Path, pipeline: str, python_path: list[Path], pipeline_id: str,
                 events: list[Any] | None, sections: str, routing: dict[str, Any],
                 cluster: dict[str, Any], sink_file: bool) -> Path:
    """The config of a test run, in ``folder``, the same on every topology but the sink.

    With ``events``, they are written as JSON lines for the ``FileJSONLinesSource`` that
    ``routing["source"]`` names (the pipeline's own file source gets the same path); with
    ``sink_file`` (a cluster run's in-memory sink), a ``FileJSONLinesSink`` writes what
    reaches the sink, one file per worker.
    """
    keys = {"pipeline": pipeline, "pipeline_id": pipeline_id,
            "python_path": os.pathsep.join(str(p) for p in python_path),
            "checkpoint_dir": "none", "progress": "no", **cluster}
    pipe = dict(routing)
    if events is not None:
        source = folder / INPUT_FILE
        with source.open("w", encoding="utf-8") as f:
            for event in events:
                f.write(json.dumps(plain(event)) + "\n")
        sections += f"\n[pipeline:{pipeline_id}:FileJSONLinesSource]\npath = {source}\n"
    if sink_file:
        pipe["sink"] = "bspump.file:FileJSONLinesSink"
        sections += f"\n[pipeline:{pipeline_id}:FileJSONLinesSink]\npath = {SINK_FILE}\n"
    text = "[cluster]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None)
    text += f"\n[pipeline:{pipeline_id}]\n" + "".join(
        f"{k} = {v}\n" for k, v in pipe.items() if v is not None)
    config = folder / "testing.ini"
    config.write_text(text + sections)
    return config


def run_cluster(config: Path, pipeline_id: str, workers: int, timeout: float) -> PipelineResult:
    """Run ``config`` on ``workers`` worker processes to its end; read its output back."""
    out = config.parent / "out"
    p = subprocess.run([sys.executable, "-m", "cluster", "run", str(config), "--output-dir",
                        str(out), "--workers", str(workers)], capture_output=True, text=True,
                       timeout=timeout, check=False)
    if p.returncode != 0:
        raise RunFailed(f"the cluster run ended with exit code {p.returncode} "
                        f"(config {config}):\n{p.stderr[-4000:]}")
    return _read_output(out, pipeline_id, workers, p.stdout)
