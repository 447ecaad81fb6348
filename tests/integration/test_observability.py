"""Observability of a real cluster: /metrics, ``bspump-cluster status``, the live page in
headless Chromium, report.html after the run, and JSON log lines.

One run of the documentation's analyzers (``SeedPipeline``: windows, sessions, the
GeoMatrix) on the generator, throttled to last ~14 s, with ``[cluster] http`` on a free
loopback port. The browser is Debian's ``chromium`` driven by Selenium through
``/usr/bin/chromedriver`` (``.ci/run`` installs both); screenshots go to
``tests/artifacts/`` (ignored by git).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIGS, ROOT, cli, remove_run_leftovers

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"
COUNT = 35_000
RATE = 2_500  # events/s: the run lasts ~14 s
P = "bspump_cluster_"

CONFIG = """
[cluster]
pipeline = example_pipelines:SeedPipeline
python_path = {configs}
workers = 2
key_groups = 64
http = 127.0.0.1:{port}
checkpoint_interval = 2

[pipeline:SeedPipeline]
shard_key = user_id
time_field = timestamp
allowed_lateness = 5

[pipeline:SeedPipeline:GeneratorSource]
count = {count}
users = 300
rate = {rate}
batch = 250
out_of_order = 2
# The spec's GeoAnalyzer indexes a (360, 180) matrix with lon + 180: only the western
# hemisphere fits, so keep every event there (else the east becomes dead letters).
lon_min = -180
lon_max = -1

[pipeline:SeedPipeline:HourlyCountAnalyzer]
count_field = type

[matrix:PersistentMatrix]
path = {persistent}
"""


def _ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _need_browser() -> None:
    """Skip without Chromium locally; under CI a missing browser is a failure."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        why = (f"needs {', '.join(missing)}: apt-get install -y chromium chromium-driver "
               "(.ci/run does)")
        if _ci():
            pytest.fail(f"CI: the browser test {why}")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str, timeout: float = 5.0) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.headers.get("Content-Type", ""), resp.read().decode()


def _scrape(base: str) -> dict[str, Any]:
    """GET /metrics and parse it with prometheus_client's parser: {family: [samples]}."""
    from prometheus_client.parser import text_string_to_metric_families

    ctype, text = _get(f"{base}/metrics")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    return {f.name: f for f in text_string_to_metric_families(text)}


def _one(fams: dict[str, Any], name: str) -> float:
    samples = fams[P + name].samples
    assert len(samples) == 1, samples
    return float(samples[0].value)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Headless Debian Chromium with a fresh profile and console logging on."""
    _need_browser()
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not go online
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1000",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _wait_for(check: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
              ) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError, KeyError) as e:  # not up yet
            last = e
        else:
            if last:
                return last
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def _attr(driver: Any, css: str, name: str) -> str | None:
    # One script call, so a re-render of the page between finding the element and
    # reading it cannot leave us holding a stale element.
    value: str | None = driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        " return e ? e.getAttribute(arguments[1]) : null;", css, name)
    return value


def _points(driver: Any, css: str) -> int:
    value = _attr(driver, css, "data-points")
    return int(value) if value else 0


def _screenshot(driver: Any, name: str) -> Path:
    """A full-page screenshot in tests/artifacts/ (its path is printed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 40, 6000))
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), path
    print(f"screenshot: {path}")
    return path


def _card(driver: Any, label: str) -> str:
    text: str = driver.execute_script(
        "for (const c of document.querySelectorAll('#cards .card'))"
        " if (c.querySelector('span').textContent === arguments[0])"
        "   return c.querySelector('b').textContent;"
        " return null;", label)
    return text


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path, str]]:
    """A running cluster: (process, config, output folder, base URL); stopped at the end."""
    port = _free_port()
    cfg = tmp_path / "observed.ini"
    out = tmp_path / "out"
    cfg.write_text(CONFIG.format(configs=CONFIGS, port=port, count=COUNT, rate=RATE,
                                 persistent=tmp_path / "persistent.npy"))
    with open(tmp_path / "stdout.txt", "wb") as stdout, \
            open(tmp_path / "stderr.txt", "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "cluster", "run", str(cfg), "-o", str(out),
                                 "--log-format", "json"], cwd=ROOT, stdout=stdout,
                                stderr=stderr, start_new_session=True)
    try:
        yield proc, cfg, out, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                remove_run_leftovers(proc.pid)


def test_metrics_status_live_page_report_and_json_logs(cluster: Any, browser: Any,
                                                       tmp_path: Path) -> None:
    proc, cfg, out, base = cluster

    # -- /metrics, scraped twice while the run goes on -----------------------------------
    first = _wait_for(lambda: (lambda f: f if _one(f, "events_in") > 0
                               and _one(f, "watermark_seconds") > 0 else None)(_scrape(base)),
                      30, "events and a watermark on /metrics", proc)
    time.sleep(1.5)
    second = _scrape(base)
    assert _one(second, "events_in") > _one(first, "events_in")
    outs = second[P + "worker_events_out"].samples
    assert sorted(s.labels["worker"] for s in outs) == ["0", "1"]
    assert all(s.name == P + "worker_events_out_total" for s in outs)
    assert second[P + "worker_events_out"].type == "counter"
    assert {s.labels["pipeline"] for s in outs} == {"SeedPipeline"}
    watermark = _one(second, "watermark_seconds")
    assert 1767225600 <= watermark < 1767225600 + 86400  # the generator's event time
    assert math.isfinite(_one(second, "watermark_lag_seconds"))
    assert len(second[P + "worker_queue_depth"].samples) == 2
    assert _one(second, "worker_restarts") == 0

    # -- bspump-cluster status against the running cluster ----------------------------------
    st = cli("status", str(cfg), timeout=30)
    assert st.returncode == 0, st.stderr
    lines = st.stdout.splitlines()
    assert lines[0].startswith("SeedPipeline  running"), st.stdout
    table = next(i for i, line in enumerate(lines) if line.lstrip().startswith("worker"))
    assert "events in" in lines[table] and "open sessions" in lines[table]
    rows = [line.split() for line in lines[table + 1:]]
    assert [r[0] for r in rows] == ["0", "1"], st.stdout
    assert rows[0][1] == "0-31" and rows[1][1] == "32-63"
    assert sum(int(r[2].replace(",", "")) for r in rows) > 0
    assert "watermark 2026-01-01T" in st.stdout

    # -- the live page in headless Chromium -----------------------------------------------
    browser.get(f"{base}/")
    _wait_for(lambda: _points(browser, "#throughput") >= 6  # 3 samples of 2 workers
              and _points(browser, "canvas.window-chart") >= 3
              and int(_attr(browser, 'canvas[data-matrix="GeoMatrix"]', "data-cells") or 0) > 0
              and _points(browser, "#sessions") >= 1,
              25, "the live page's charts to have data", proc)
    assert browser.find_element("id", "state").text == "running"
    assert _attr(browser, 'canvas[data-matrix="GeoMatrix"]', "data-kind") == "geo"
    assert int(_card(browser, "events read").replace(",", "")) > 0
    live_png = _screenshot(browser, "observability-live.png")
    assert _console_errors(browser) == []
    browser.get("about:blank")  # stop polling before the run ends

    # -- the end of the run -----------------------------------------------------------------
    assert proc.wait(60) == 0, (tmp_path / "stderr.txt").read_text()
    gone = cli("status", str(cfg), "--output-dir", str(out), timeout=30)
    assert gone.returncode == 1
    assert "nothing answers at http://127.0.0.1:" in gone.stderr, gone.stderr
    assert str(out / "summary.json") in gone.stderr

    # -- report.html, offline, with the final figures -------------------------------------
    report = out / "report.html"
    assert report.exists()
    browser.get(report.as_uri())
    assert browser.find_element("id", "state").text == "finished"
    assert _card(browser, "events read") == f"{COUNT:,}"
    assert _points(browser, "#throughput") >= 2
    assert _points(browser, "canvas.window-chart") >= 3
    assert _points(browser, "#checkpoint-chart") >= 1
    geo = 'canvas[data-matrix="GeoMatrix"]'
    assert float(_attr(browser, geo, "data-sum") or 0) == COUNT  # every event is on the map
    assert int(_attr(browser, geo, "data-cells") or 0) > 1000
    assert browser.execute_script(
        f"return document.querySelector('{geo}').getBoundingClientRect().width") > 400
    report_png = _screenshot(browser, "observability-report.png")
    assert _console_errors(browser) == []
    assert live_png.stat().st_size > 20_000 and report_png.stat().st_size > 20_000

    # -- JSON log lines from the supervisor and the coordinator -------------------------------
    records, other = [], []
    for line in (tmp_path / "stderr.txt").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            other.append(line)
    events = {(r["role"], r.get("event")) for r in records}
    for expected in [("supervisor", "start"), ("coordinator", "layout"),
                     ("coordinator", "http"), ("coordinator", "checkpoint"),
                     ("supervisor", "stop")]:
        assert expected in events, (expected, sorted(events, key=str))
    assert all({"time", "level", "role", "pid", "message"} <= r.keys() for r in records)
    stop = next(r for r in records if r.get("event") == "stop")
    assert stop["exit_code"] == 0 and stop["outcome"] == "finished"
    # What is not a log line yet: the coordinator's closing summary (see README).
    assert all(x.startswith(("bspump-cluster: finished", "  ")) for x in other), other


def test_status_says_when_http_is_off(tmp_path: Path) -> None:
    cfg = tmp_path / "quiet.ini"
    cfg.write_text(CONFIG.replace("http = 127.0.0.1:{port}\n", "").format(
        configs=CONFIGS, count=10, rate=0, persistent=tmp_path / "p.npy"))
    st = cli("status", str(cfg), timeout=30)
    assert st.returncode == 1
    assert "off" in st.stderr and "[cluster] http = 127.0.0.1:PORT" in st.stderr, st.stderr
