"""The coordinator's small HTTP server: ``/metrics``, ``/api/snapshot`` and the live page.

It runs in the coordinator's event loop (no thread, no framework), answers GET only,
and listens where ``[cluster] http`` says (loopback unless the config names another
address). The page and its assets ship in ``coordinator/page/``: nothing is fetched
from the internet. At the end of a finite run the same page, with the final snapshot
embedded, is written as ``<output_dir>/report.html``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator import metrics

if TYPE_CHECKING:
    from coordinator.runtime import Coordinator

log = logging.getLogger("bspump-cluster.http")

PAGE_DIR = Path(__file__).resolve().parent / "page"
_SNAPSHOT_MARK = "/*SNAPSHOT*/null"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_MAX_REQUEST = 16384


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


def write_report(snapshot: dict[str, Any], path: Path) -> None:
    """Write the page with ``snapshot`` built in: readable offline, no server needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page(snapshot), encoding="utf-8")
    tmp.replace(path)


def _response(status: str, body: bytes, content_type: str) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


def _route(coord: Coordinator, method: str, target: str) -> bytes:
    path = target.split("?", 1)[0]
    if method != "GET":
        return _response("405 Method Not Allowed", b"GET only\n", "text/plain")
    if path == "/metrics":
        body = metrics.render(coord.snapshot()).encode()
        return _response("200 OK", body, "text/plain; version=0.0.4; charset=utf-8")
    if path == "/api/snapshot":
        return _response("200 OK", json.dumps(coord.snapshot()).encode(), "application/json")
    if path in ("/", "/index.html"):
        return _response("200 OK", page().encode(), _TYPES[".html"])
    if path == "/favicon.ico":
        return _response("204 No Content", b"", "image/x-icon")
    return _response("404 Not Found", b"not found\n", "text/plain")


async def _handle(coord: Coordinator, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if len(head) > _MAX_REQUEST:
            raise ValueError("request too large")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3:
            writer.write(_response("400 Bad Request", b"bad request\n", "text/plain"))
        else:
            writer.write(_route(coord, parts[0], parts[1]))
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError,
            ConnectionError):
        pass
    except Exception:
        log.exception("HTTP request failed")
        writer.write(_response("500 Internal Server Error", b"error\n", "text/plain"))
    finally:
        writer.close()


async def serve(coord: Coordinator, host: str, port: int) -> asyncio.Server:
    """Start serving in the running event loop."""
    server = await asyncio.start_server(lambda r, w: _handle(coord, r, w), host, port,
                                        limit=_MAX_REQUEST)
    return server
