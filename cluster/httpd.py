"""The HTTP server of a coordinator and of a partition-task member: aiohttp, GET only.

It runs in the caller's event loop and serves a table of paths, each a function that
returns the body and its content type at the time of the request. Other paths are
404, other methods 405. aiohttp (the server of BSPump's own framework, ASAB) is
imported only when a run serves HTTP, so a run without ``[cluster] http`` does not pay
its import time.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger("bspump-cluster.http")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

# path -> () -> (body, content type)
Routes = dict[str, Callable[[], tuple[bytes, str]]]


class HttpServer:
    """A running server: the port it listens on, and how to stop it."""

    def __init__(self, runner: Any, port: int) -> None:
        self._runner = runner
        self.port = port

    async def close(self) -> None:
        """Stop listening and close open connections."""
        await self._runner.cleanup()


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


async def serve(routes: Routes, host: str, port: int,
                sock: socket.socket | None = None) -> HttpServer:
    """Serve ``routes`` on host:port (or on a socket from :func:`bind`) in this loop."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        make = routes.get(request.path)
        if make is None:
            return web.Response(status=404, text="not found\n")
        body, content_type = make()
        return web.Response(body=body, headers={"Content-Type": content_type,
                                                "Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_route("GET", "/{path:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
    await site.start()
    bound = sock.getsockname()[1] if sock is not None else runner.addresses[0][1]
    if not is_loopback(host):
        # The config opted in (http_public); still say it where the operator looks.
        log.warning("serving the run's figures to the network on %s:%d (http_public = yes): "
                    "anyone who can reach this host can read them", host, bound,
                    extra={"event": "http_public", "host": host, "port": int(bound)})
    return HttpServer(runner, int(bound))
