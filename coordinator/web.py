"""The coordinator's small HTTP server: ``/metrics``, ``/api/snapshot`` and the live page.

It runs in the coordinator's event loop (aiohttp, see :mod:`cluster.httpd`), answers GET only,
and listens where ``[cluster] http`` says (loopback unless the config names another
address). The page and its assets ship in ``coordinator/page/``: nothing is fetched
from the internet. At the end of a finite run the same page, with the final snapshot
embedded, is written as ``<output_dir>/report.html``.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster import httpd
from cluster.config import ClusterSettings
from cluster.errors import StartRefused
from cluster.figures import Snapshot
from cluster.outputs import FILE_MODE, atomic_write_bytes
from coordinator import metrics

log = logging.getLogger("bspump-cluster.coordinator")

# () -> the run's snapshot now (coordinator.status.Status.snapshot)
SnapshotOf = Callable[[], Snapshot]

PAGE_DIR = Path(__file__).resolve().parent / "page"
_SNAPSHOT_MARK = "/*SNAPSHOT*/null"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def page(snapshot: dict[str, Any] | None = None) -> str:
    """The page, its scripts and styles inlined; with a snapshot it is a static report.

    Without a snapshot the page polls ``/api/snapshot``; the snapshot slot then holds
    ``null``.
    """
    html = (PAGE_DIR / "index.html").read_text(encoding="utf-8")
    for asset in sorted(PAGE_DIR.iterdir()):
        marker = f"<!--inline:{asset.name}-->"
        if marker in html:
            html = html.replace(marker, asset.read_text(encoding="utf-8"))
    # JSON inside <script>: no "<" at all, so neither "</script>" nor "<!--" can occur.
    data = "null" if snapshot is None else json.dumps(snapshot).replace("<", "\\u003c")
    return html.replace(_SNAPSHOT_MARK, data)


def write_report(snapshot: dict[str, Any], path: Path, mode: int = FILE_MODE) -> None:
    """Write the page with ``snapshot`` built in: readable offline, no server needed."""
    atomic_write_bytes(path, page(snapshot).encode("utf-8"), mode)


def routes(snapshot: SnapshotOf) -> httpd.Routes:
    """What the coordinator serves: /metrics, /api/snapshot and the live page."""
    return {
        "/metrics": lambda: (metrics.render(snapshot().to_dict()).encode(),
                             httpd.PROMETHEUS_TEXT),
        "/api/snapshot": lambda: (json.dumps(snapshot().to_dict()).encode(),
                                  "application/json"),
        "/": lambda: (page().encode(), _TYPES[".html"]),
        "/index.html": lambda: (page().encode(), _TYPES[".html"]),
        "/favicon.ico": lambda: (b"", "image/x-icon"),
    }


async def serve(snapshot: SnapshotOf, host: str, port: int,
                sock: socket.socket | None = None) -> httpd.HttpServer:
    """Start serving in the running event loop (on ``sock`` when already bound)."""
    return await httpd.serve(routes(snapshot), host, port, sock)


def bind(settings: ClusterSettings) -> socket.socket | None:
    """Bind ``[cluster] http`` now, before any result is touched: a taken port refuses the
    run. None when the run serves no HTTP."""
    if not settings.http:
        return None
    host, port = settings.http
    try:
        return httpd.bind(host, port)
    except OSError as e:
        where = settings.config.where("cluster", "http")
        raise StartRefused(f"cannot serve http on {host}:{port} ({where}): "
                           f"{e.strerror or e}") from None


async def start(settings: ClusterSettings, snapshot: SnapshotOf,
                sock: socket.socket | None) -> httpd.HttpServer | None:
    """Serve /metrics, /api/snapshot and the live page when ``[cluster] http`` is set."""
    if not settings.http:
        return None
    host, port = settings.http
    server = await serve(snapshot, host, port, sock)
    log.info("metrics and live page on http://%s:%d/", host, server.port,
             extra={"event": "http", "host": host, "port": server.port})
    return server
