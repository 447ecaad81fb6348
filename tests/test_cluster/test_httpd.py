"""The HTTP server (aiohttp): routes by path, GET only, 404 elsewhere, a pre-bound socket."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from cluster import httpd


def _get(port: int, path: str, method: str = "GET") -> tuple[int, bytes, str | None]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read(), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, b"", None


def _exchange(sock: bool) -> list[tuple[int, bytes, str | None]]:
    calls = []

    def body() -> tuple[bytes, str]:
        calls.append(1)
        return f"call {len(calls)}".encode(), "text/plain; charset=utf-8"

    async def main() -> list[tuple[int, bytes, str | None]]:
        bound = httpd.bind("127.0.0.1", 0) if sock else None
        server = await httpd.serve({"/x": body}, "127.0.0.1", 0, bound)
        if bound is not None:
            assert server.port == bound.getsockname()[1]
        loop = asyncio.get_running_loop()
        try:
            return [await loop.run_in_executor(None, _get, server.port, *args)
                    for args in (("/x",), ("/x",), ("/y",), ("/x", "POST"))]
        finally:
            await server.close()

    return asyncio.run(main())


def test_routes_answer_each_request_anew_get_only() -> None:
    for sock in (False, True):
        got = _exchange(sock)
        assert got[0] == (200, b"call 1", "text/plain; charset=utf-8")
        assert got[1][:2] == (200, b"call 2")
        assert got[2][0] == 404
        assert got[3][0] == 405


def test_loopback_addresses() -> None:
    assert httpd.is_loopback("127.0.0.1") and httpd.is_loopback("::1")
    assert httpd.is_loopback("localhost")
    assert not httpd.is_loopback("0.0.0.0") and not httpd.is_loopback("example.org")
