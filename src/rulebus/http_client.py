"""A small HTTP/1.1 client for webhook POSTs, with keep-alive connection pools.

Why not aiohttp's client: webhooks are the engine's hottest I/O, and measured
under the exchange pipeline aiohttp's per-request machinery took about 45% of
the worker's CPU. A webhook POST needs little: send one request on a kept-alive
connection, read the status and the (usually empty) body. This does that and
no more: no redirects, no cookies, no proxies, no compression.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


class HttpError(Exception):
    """The request could not be completed (connection, protocol or time-out)."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    @functools.lru_cache(maxsize=256)  # a handful of webhook URLs, parsed per POST
    def parse(cls, url: str) -> tuple[Origin, str]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port), target


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    """POSTs with at most ``limit`` connections per origin, kept alive between requests."""

    def __init__(self, limit: int = 64) -> None:
        self._idle: dict[Origin, list[_Connection]] = defaultdict(list)
        self._limits: dict[Origin, asyncio.Semaphore] = {}
        self._limit = limit
        self._ssl: ssl.SSLContext | None = None

    async def close(self) -> None:
        for connections in self._idle.values():
            for conn in connections:
                conn.close()
        self._idle.clear()

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """Send the POST and return the response's status code."""
        origin, target = Origin.parse(url)
        head = [
            f"POST {target} HTTP/1.1",
            f"host: {_host_header(origin)}",
            f"content-length: {len(body)}",
        ]
        head += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        limit = self._limits.get(origin)
        if limit is None:
            limit = self._limits[origin] = asyncio.Semaphore(self._limit)
        async with limit:
            try:
                async with asyncio.timeout(timeout):
                    return await self._exchange(origin, request)
            except TimeoutError:
                raise HttpError(f"no answer within {timeout}s") from None

    async def _exchange(self, origin: Origin, request: bytes) -> int:
        idle = self._idle[origin]
        while idle:
            conn = idle.pop()
            try:
                return await self._send(origin, conn, request)
            except (ConnectionError, asyncio.IncompleteReadError):
                # The server closed a kept-alive connection while it was idle;
                # nothing was processed on it, so try the next one.
                conn.close()
        return await self._send(origin, await self._connect(origin), request)

    async def _connect(self, origin: Origin) -> _Connection:
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            reader, writer = await asyncio.open_connection(origin.host, origin.port, ssl=context)
        except OSError as exc:
            raise HttpError(f"cannot connect: {exc.strerror or exc}") from None
        return _Connection(reader, writer)

    async def _send(self, origin: Origin, conn: _Connection, request: bytes) -> int:
        try:
            conn.writer.write(request)
            status, keep_alive = await _read_response(conn.reader)
        except BaseException:
            conn.close()
            raise
        if keep_alive:
            self._idle[origin].append(conn)
        else:
            conn.close()
        return status


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns its status and whether the connection stays open."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError("response headers too long") from None
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise HttpError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    status = int(code)
    if status in (204, 304) or 100 <= status < 200:
        return status, keep_alive
    if "chunked" in headers.get("transfer-encoding", "").lower():
        await _skip_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_BODY_BYTES:
            raise HttpError("response body too long")
        await reader.readexactly(length)
    else:
        # No length: the body runs to the end of the connection.
        with contextlib.suppress(asyncio.IncompleteReadError):
            await reader.readexactly(MAX_BODY_BYTES + 1)
        keep_alive = False
    return status, keep_alive


async def _skip_chunked(reader: asyncio.StreamReader) -> None:
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return
        total += size
        if total > MAX_BODY_BYTES:
            raise HttpError("response body too long")
        await reader.readexactly(size + 2)


def _host_header(origin: Origin) -> str:
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    default = 443 if origin.scheme == "https" else 80
    return host if origin.port == default else f"{host}:{origin.port}"
