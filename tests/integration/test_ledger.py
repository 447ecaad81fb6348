"""The ledger with real processes: it closes on a normal run, and a run whose results
are not on disk (the output folder deleted under it) does not exit 0."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cluster import exits
from tests.conftest import ROOT
from tests.integration.test_lifecycle import ENDLESS

# The lifecycle tests' endless generator, made finite (30,000 events at 10,000/s).
SLOW = ENDLESS.replace("workers = 2\n", "workers = 2\ncheckpoint_dir = none\n").replace(
    "count = 0\nrate = 20000", "count = 30000\nrate = 10000") + """
[pipeline:AggregationPipeline:HourlyCountAnalyzer]
count_field = type
"""


def test_deleting_the_output_folder_mid_run_is_an_error_exit(tmp_path: Path) -> None:
    cfg = tmp_path / "slow.ini"
    cfg.write_text(SLOW)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(cfg), "-o", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    windows = out / "AggregationPipeline.HourlyCountAnalyzer.windows.jsonl"
    deadline = time.monotonic() + 60
    while not windows.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert windows.exists(), "no window row within 60 s"
    shutil.rmtree(out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == exits.LEDGER, err
    assert "HourlyCountAnalyzer.windows.jsonl is not on disk" in err
    assert "output folder deleted or moved" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == exits.LEDGER
    assert summary["ledger"]["closes"] is True  # every record was counted; the files are gone


def test_the_ledger_closes_and_is_in_summary_status_and_metrics(tmp_path: Path) -> None:
    cfg = tmp_path / "slow.ini"
    cfg.write_text(SLOW.replace("count = 30000", "count = 5000"))
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "cluster", "run", str(cfg), "-o", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ledger"] == {"read": 5000, "processed": 5000, "late": 0, "dead": 0,
                                 "in_flight": 0, "unaccounted": 0, "held": 0, "closes": True}
    assert "ledger        read 5,000 = processed 5,000 + late 0 + dead 0  (closes)" in p.stderr
    for name, size in summary["result_files"].items():
        assert (out / name).stat().st_size == size
