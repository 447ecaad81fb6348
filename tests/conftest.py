"""Shared test helpers: input files, config files, and running the real CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
T0 = 1767225600.0


def make_lines(n: int = 20_000, users: int = 1500, seed: int = 7) -> list[str]:
    """JSON lines with out-of-order and late events, bad records, ISO and numeric times."""
    rng = random.Random(seed)
    lines: list[str] = []
    t = T0
    for i in range(n):
        t += rng.expovariate(1.0)
        ts = t - rng.uniform(0.0, 20.0)
        if i % 500 == 499:
            ts = t - 400.0  # behind the watermark: late
        event: dict[str, object] = {
            "user_id": f"u{int(rng.paretovariate(1.1)) % users}",
            "type": f"type{rng.randrange(5)}",
            "timestamp": round(ts, 3),
            "value": round(rng.gauss(100, 10), 3),
            "latitude": round(rng.uniform(-89.9, 89.9), 4),
            "longitude": round(rng.uniform(-179.9, -0.1) if rng.random() > 0.02
                               else rng.uniform(0.0, 179.9), 4),
        }
        if i % 97 == 0:
            event["timestamp"] = datetime.fromtimestamp(ts, UTC).isoformat()
        if i % 1500 == 1499:
            del event["user_id"]
        if i % 2500 == 2499:
            event["timestamp"] = "yesterday"
        line = json.dumps(event)
        if i % 1000 == 999:
            line = line[: len(line) // 2]  # truncated: malformed JSON
        if i % 4000 == 3999:
            line = json.dumps([1, 2, 3])  # JSON, but not an object
        lines.append(line)
    return lines


@dataclass
class Run:
    """A finished ``bspump-cluster run``."""

    returncode: int
    stdout: str
    stderr: str
    out: Path

    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())

    def jsonl(self, name: str) -> list[dict]:
        path = self.out / name
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def cli(*args: str, timeout: float = 180, env: dict[str, str] | None = None,
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cluster ARGS`` (the ``bspump-cluster`` command)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd, check=False)


def run_config(config: Path, out: Path, workers: int | None = None, in_process: bool = False,
               timeout: float = 180) -> Run:
    """Run a config to its end and collect what it printed."""
    args = ["run", str(config), "--output-dir", str(out)]
    if in_process:
        args.append("--in-process")
    elif workers is not None:
        args += ["--workers", str(workers)]
    p = cli(*args, timeout=timeout)
    return Run(p.returncode, p.stdout, p.stderr, out)


SEED_CONFIG = """
[cluster]
pipeline = example_pipelines:SeedPipeline
python_path = {configs}
key_groups = 64

[pipeline:SeedPipeline]
shard_key = user_id
time_field = timestamp
allowed_lateness = 30
source = bspump.file:FileJSONLinesSource

[pipeline:SeedPipeline:FileJSONLinesSource]
path = {input}
batch = 700

[pipeline:SeedPipeline:HourlyCountAnalyzer]
count_field = type

[matrix:PersistentMatrix]
path = {persistent}
"""


@pytest.fixture
def seed_config(tmp_path: Path):
    """Write an input file and a config running every spec analyzer over it."""

    def make(lines: list[str], name: str = "seed.ini", extra: str = "") -> Path:
        data = tmp_path / "input.jsonl"
        data.write_text("\n".join(lines) + "\n")
        cfg = tmp_path / name
        cfg.write_text(SEED_CONFIG.format(configs=CONFIGS, input=data,
                                          persistent=tmp_path / "persistent.npy") + extra)
        return cfg

    return make


def shm_segments() -> set[str]:
    """Names of this project's shared-memory segments that exist now."""
    return {p.name for p in Path("/dev/shm").glob("bspc-*")}


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid`` with its command line."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] == "Z":
            continue
        parent[int(entry.name)] = int(fields[1])
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        for child, pp in parent.items():
            if pp == p and child not in found:
                try:
                    found[child] = (Path(f"/proc/{child}/cmdline").read_bytes()
                                    .replace(b"\0", b" ").decode())
                except OSError:
                    found[child] = "?"
                frontier.append(child)
    return found
