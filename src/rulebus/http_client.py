"""A small HTTP/1.1 client for webhook POSTs, with keep-alive connection pools.

Why not aiohttp's client: webhooks are the engine's hottest I/O, and measured
under the exchange pipeline aiohttp's per-request machinery took about 45% of
the worker's CPU, and asyncio's streams still a fifth. A webhook POST needs
little: send one request on a kept-alive connection, read the status and skip
the (usually empty) body. So each connection is an asyncio protocol that
feeds httptools' C parser, and a request is one write and one future: no
redirects, no cookies, no proxies, no compression.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any

import httptools

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


class HttpError(Exception):
    """The request could not be completed (connection, protocol or time-out)."""


class _Stale(Exception):
    """A kept-alive connection closed before any of the answer came: nothing was processed."""


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


class _Connection(asyncio.Protocol):
    """One connection, one request at a time; ``request`` returns (status, keep-alive)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[int, bool]] | None = None
        self._received = 0  # bytes of the current answer so far
        self._status = 0  # set once the answer's headers are complete

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bool]]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._received = 0
        self._status = 0
        self.transport.write(data)
        return self._answer

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def fail(self, error: Exception) -> None:
        """End the current request with ``error``; the connection is not reused."""
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self.close()

    # asyncio.Protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        if self._status == 0 and self._received > MAX_HEADER_BYTES:
            self.fail(HttpError("response headers too long"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(HttpError("the server switched protocols"))
        except httptools.HttpParserError:
            self.fail(HttpError(f"not an HTTP/1.x response: {data[:80]!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is None or answer.done():
            return
        if self._status and self._parser.should_keep_alive() is False:
            # A body without a length runs to the end of the connection.
            answer.set_result((self._status, False))
        elif self._received == 0:
            answer.set_exception(_Stale())
        else:
            answer.set_exception(HttpError("the connection closed in the middle of the answer"))

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self._received > MAX_HEADER_BYTES + MAX_BODY_BYTES:
            self.fail(HttpError("response body too long"))

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the final one
            # follows on the same connection.
            self._status = 0
            return
        answer = self._answer
        if answer is not None and not answer.done():
            assert self.transport is not None
            # A server that answered before reading the whole request may
            # read the rest as a new one: do not reuse the connection then.
            keep_alive = (
                self._parser.should_keep_alive() and self.transport.get_write_buffer_size() == 0
            )
            answer.set_result((status, keep_alive))


class _Pool:
    """The connections to one origin: at most ``limit`` open, idle ones reused."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.idle: list[_Connection] = []
        self.opened = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def slot(self) -> None:
        """Wait until a connection may be taken or opened."""
        while not self.idle and self.opened >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
                else:
                    self._wake()  # woken, then cancelled: pass the turn on
                raise

    def take(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
            self.release()
        return None

    def give_back(self, conn: _Connection, reusable: bool) -> None:
        if reusable and not conn.closed:
            self.idle.append(conn)
            self._wake()
        else:
            conn.close()
            self.release()

    def release(self) -> None:
        """A connection is gone (or was never made): its slot is free for a waiter."""
        self.opened -= 1
        self._wake()

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class HttpClient:
    """POSTs with at most ``limit`` connections per origin, kept alive between requests."""

    def __init__(self, limit: int = 64) -> None:
        self._pools: dict[Origin, _Pool] = {}
        self._limit = limit
        self._ssl: ssl.SSLContext | None = None

    async def close(self) -> None:
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()
        self._pools.clear()

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
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self._limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                if not pool.idle and pool.opened >= pool.limit:
                    # Another request may take the freed connection before
                    # this one runs again, so look again after waking.
                    await asyncio.wait_for(pool.slot(), max(deadline - loop.time(), 0))
                    continue
                conn = pool.take()
                fresh = conn is None
                if conn is None:
                    pool.opened += 1
                    try:
                        conn = await asyncio.wait_for(self._connect(origin), deadline - loop.time())
                    except BaseException:
                        pool.release()
                        raise
                try:
                    status, keep_alive = await _exchange(loop, conn, request, deadline, timeout)
                except _Stale:
                    # The server closed a kept-alive connection while it was
                    # idle; nothing was processed on it, so try another.
                    pool.give_back(conn, reusable=False)
                    if fresh:
                        raise HttpError("the connection closed before any answer") from None
                    continue
                except BaseException:
                    pool.give_back(conn, reusable=False)
                    raise
                pool.give_back(conn, keep_alive)
                return status
        except TimeoutError:
            raise HttpError(f"no answer within {timeout}s") from None

    async def _connect(self, origin: Origin) -> _Connection:
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection, origin.host, origin.port, ssl=context
            )
        except OSError as exc:
            raise HttpError(f"cannot connect: {exc.strerror or exc}") from None
        return conn


async def _exchange(
    loop: asyncio.AbstractEventLoop,
    conn: _Connection,
    request: bytes,
    deadline: float,
    timeout: float,
) -> tuple[int, bool]:
    answer = conn.request(request)
    # One timer per request; asyncio.timeout() costs several times more.
    timer = loop.call_at(deadline, conn.fail, HttpError(f"no answer within {timeout}s"))
    try:
        return await answer
    finally:
        timer.cancel()


def _host_header(origin: Origin) -> str:
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    default = 443 if origin.scheme == "https" else 80
    return host if origin.port == default else f"{host}:{origin.port}"
