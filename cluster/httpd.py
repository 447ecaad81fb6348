"""A small GET-only HTTP server in the running event loop (no thread, no framework).

The coordinator serves its page and figures with it, a partition-task member its
figures. ``route(method, path)`` returns the whole response, made with :func:`response`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("bspump-cluster.http")

MAX_REQUEST = 16384
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

Route = Callable[[str, str], bytes]


def response(status: str, body: bytes, content_type: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


def not_found() -> bytes:
    """404."""
    return response("404 Not Found", b"not found\n", "text/plain")


async def _handle(route: Route, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if len(head) > MAX_REQUEST:
            raise ValueError("request too large")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3:
            writer.write(response("400 Bad Request", b"bad request\n", "text/plain"))
        elif parts[0] != "GET":
            writer.write(response("405 Method Not Allowed", b"GET only\n", "text/plain"))
        else:
            writer.write(route(parts[0], parts[1].split("?", 1)[0]))
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError,
            ConnectionError):
        pass
    except Exception:
        log.exception("HTTP request failed")
        writer.write(response("500 Internal Server Error", b"error\n", "text/plain"))
    finally:
        writer.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, bound now: a taken port fails before the run starts.

    Raises OSError (``errno.EADDRINUSE`` when another process has the port).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (``localhost``, 127.x, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to any interface


async def serve(route: Route, host: str, port: int,
                sock: socket.socket | None = None) -> asyncio.Server:
    """Start serving ``route`` on host:port (or on a socket from :func:`bind`)."""
    if sock is not None:
        server = await asyncio.start_server(lambda r, w: _handle(route, r, w), sock=sock,
                                            limit=MAX_REQUEST)
    else:
        server = await asyncio.start_server(lambda r, w: _handle(route, r, w), host, port,
                                            limit=MAX_REQUEST)
    if not is_loopback(host):
        # The config opted in (http_public); still say it where the operator looks.
        log.warning("serving the run's figures to the network on %s:%d (http_public = yes): "
                    "anyone who can reach this host can read them", host, bound_port(server))
    return server


def bound_port(server: asyncio.Server) -> int:
    """The port a server listens on (the one chosen when port 0 was asked for)."""
    return int(server.sockets[0].getsockname()[1])
