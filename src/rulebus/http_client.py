"""A small HTTP/1.1 client for webhook POSTs, with keep-alive connection pools.

Why not aiohttp's client: webhooks are the engine's hottest I/O, and measured
under the exchange pipeline aiohttp's per-request machinery took about 45% of
the worker's CPU, and asyncio's streams still a fifth. A webhook POST needs
little: send one request on a kept-alive connection, read the status and skip
the (usually empty) body. So each connection is an asyncio protocol that
feeds httptools' C parser, and a request is one write and one future: no
redirects, no cookies, no proxies, no compression.

Each new connection resolves the host, checks every address against the
egress policy (``rulebus.egress``) and connects to the checked address, with
the URL's host name kept for TLS (SNI and certificate checks).

Requests to one host and port are counted across every client of the process
(webhooks of all notification topics, every ``http`` action): each request
names the most that may be in flight there, so a sender's limit protects the
target from the whole process, not only from that sender.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import re
import socket
import ssl
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any

import httptools

from rulebus.egress import Egress, EgressRefused
from rulebus.errors import ActionError, BadInput

MAX_HEADER_BYTES = 64 * 1024
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
MAX_BODY_BYTES = 1024 * 1024


class HttpError(Exception):
    """The request could not be completed (connection, protocol or time-out)."""


@dataclass(frozen=True, slots=True)
class Response:
    """What a webhook POST needs of an answer: its status and where it points next."""

    status: int
    location: str | None = None
    retry_after: str | None = None


def retry_delay(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (delay or HTTP date), None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None  # HTTP dates are GMT; a date without a zone is not one
    return max(when.timestamp() - now, 0.0)


# Answers are immutable: the common ones (a status alone) are made once.
_PLAIN: dict[int, Response] = {}


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
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host = parts.hostname if parts.hostname.isascii() else parts.hostname.encode("idna")
        except (ValueError, UnicodeError) as exc:
            raise HttpError(f"bad URL {url!r}: {exc}") from None
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        # Whatever is not printable ASCII travels percent-encoded (UTF-8), as
        # browsers send an IRI; escapes already there are kept as they are.
        target = urllib.parse.quote(target, safe="/?&=%:@!$'()*+,;~[]")
        return cls(parts.scheme, host if isinstance(host, str) else host.decode(), port), target


class _Connection(asyncio.Protocol):
    """One connection, one request at a time; ``request`` returns (status, keep-alive)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[Response, bool]] | None = None
        self._received = 0  # bytes of the current answer so far
        self._status = 0  # set once the answer's headers are complete
        self._location: str | None = None
        self._retry_after: str | None = None

    def request(self, data: bytes) -> asyncio.Future[tuple[Response, bool]]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._received = 0
        self._status = 0
        self._location = self._retry_after = None
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
            answer.set_result((self._response(self._status), False))
        elif self._received == 0:
            answer.set_exception(_Stale())
        else:
            answer.set_exception(HttpError("the connection closed in the middle of the answer"))

    def _response(self, status: int) -> Response:
        if self._location is None and self._retry_after is None:
            plain = _PLAIN.get(status)
            if plain is None:
                plain = _PLAIN[status] = Response(status)
            return plain
        return Response(status, self._location, self._retry_after)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only two headers matter to a webhook sender: where a redirect
        # points, and when to come back.
        if len(name) == 8 and name.lower() == b"location":
            self._location = value.decode("latin-1")
        elif len(name) == 11 and name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")

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
            self._location = self._retry_after = None
            return
        answer = self._answer
        if answer is not None and not answer.done():
            assert self.transport is not None
            # A server that answered before reading the whole request may
            # read the rest as a new one: do not reuse the connection then.
            keep_alive = (
                self._parser.should_keep_alive() and self.transport.get_write_buffer_size() == 0
            )
            answer.set_result((self._response(status), keep_alive))


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


class _Target:
    """The requests in flight to one host and port, from every client of the process."""

    __slots__ = ("busy", "waiters")

    def __init__(self) -> None:
        self.busy = 0
        self.waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def wake(self) -> None:
        # The first waiter whose own limit lets it in: one with a lower limit
        # than the rest waits longer, without holding up those behind it.
        for entry in self.waiters:
            limit, waiter = entry
            if self.busy < limit and not waiter.done():
                self.waiters.remove(entry)
                waiter.set_result(None)
                return


_TARGETS: dict[tuple[str, int], _Target] = {}


async def _enter(key: tuple[str, int], limit: int) -> _Target:
    """Wait until fewer than ``limit`` requests are in flight to the target, then count one."""
    target = _TARGETS.get(key)
    if target is None:
        target = _TARGETS[key] = _Target()
    while target.busy >= limit:
        entry = (limit, asyncio.get_running_loop().create_future())
        target.waiters.append(entry)
        try:
            await entry[1]
        except BaseException:
            if entry in target.waiters:
                target.waiters.remove(entry)
            else:
                target.wake()  # woken, then cancelled: pass the turn on
            raise
    target.busy += 1
    return target


def _leave(key: tuple[str, int], target: _Target) -> None:
    target.busy -= 1
    if target.busy == 0 and not target.waiters:
        # Templated URLs may name many hosts: forget the idle ones.
        if _TARGETS.get(key) is target:
            del _TARGETS[key]
    else:
        target.wake()


def in_flight(host: str, port: int) -> int:
    """Requests in flight to ``host:port`` from this process (for tests and stats)."""
    target = _TARGETS.get((host, port))
    return 0 if target is None else target.busy


class HttpClient:
    """POSTs with at most ``limit`` connections per origin, kept alive between requests.

    Connections go only where ``egress`` allows: by default, public addresses.
    """

    def __init__(self, limit: int = 64, egress: Egress | None = None) -> None:
        self._pools: dict[Origin, _Pool] = {}
        self._limit = limit
        self.egress = egress or Egress()
        self._ssl: ssl.SSLContext | None = None

    async def close(self) -> None:
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()
        self._pools.clear()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float,
        concurrency: int = 64,
    ) -> Response:
        """Send the POST and return the answer's status (and redirect and retry hints).

        It waits first until fewer than ``concurrency`` requests of the process
        are in flight to the URL's host and port; ``timeout`` runs from then.
        Raises HttpError when no answer came, EgressRefused when the host is
        not allowed, and BadHeader for a header that would split the request.
        """
        origin, target = Origin.parse(url)
        request = request_head(origin, target, len(body), headers) + body
        key = (origin.host, origin.port)
        gate = await _enter(key, concurrency)
        try:
            return await self._send(origin, request, timeout)
        finally:
            _leave(key, gate)

    async def _send(self, origin: Origin, request: bytes, timeout: float) -> Response:
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
                    response, keep_alive = await _exchange(loop, conn, request, deadline, timeout)
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
                return response
        except TimeoutError:
            raise HttpError(f"no answer within {timeout}s") from None

    async def _connect(self, origin: Origin) -> _Connection:
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        loop = asyncio.get_running_loop()
        refused = self.egress.literal_refusal(origin.host)
        if refused is not None:
            raise EgressRefused(origin.host, refused)
        try:
            infos = await loop.getaddrinfo(
                origin.host, origin.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except OSError as exc:
            raise HttpError(f"cannot resolve {origin.host}: {exc.strerror or exc}") from None
        addresses = self.egress.check(origin.host, (str(info[4][0]) for info in infos))
        error: OSError | None = None
        for info, address in zip(infos, addresses, strict=True):
            try:
                _, conn = await loop.create_connection(
                    _Connection,
                    address,
                    origin.port,
                    family=info[0],
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
            except OSError as exc:
                error = exc
                continue
            return conn
        assert error is not None
        raise HttpError(f"cannot connect: {error.strerror or error}") from None


async def _exchange(
    loop: asyncio.AbstractEventLoop,
    conn: _Connection,
    request: bytes,
    deadline: float,
    timeout: float,
) -> tuple[Response, bool]:
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


class BadHeader(BadInput):
    """A header name or value that cannot be sent as it is: it would split the request."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"header {name!r}: {problem}")
        self.name = name


def request_head(origin: Origin, target: str, length: int, headers: dict[str, str]) -> bytes:
    """The request line and headers; the only way this module builds them.

    Every name must be an HTTP token and every value printable ASCII, so no
    value (a topic, an id, a template's output) can end a header and start
    another (CR/LF) or end the string early in a C parser (NUL).
    """
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    # One pass over the whole block in C for the common case; the slow check
    # below finds the culprit, and learns the names that are tokens.
    if not (
        fields.isascii()
        and fields.count("\n") == len(headers)
        and fields.replace("\r\n", "").isprintable()
        and _TOKENS.issuperset(headers)
    ):
        check_headers(headers)
    return (
        f"POST {target} HTTP/1.1\r\nhost: {_host_header(origin)}\r\n"
        f"content-length: {length}\r\n{fields}\r\n"
    ).encode("ascii")


_TOKENS: set[str] = set()  # header names seen to be tokens (a handful)


def check_headers(headers: dict[str, str]) -> None:
    """Raise BadHeader for a name that is not an HTTP token or a value that is not
    printable ASCII."""
    for name, value in headers.items():
        if name not in _TOKENS:
            if _TOKEN.fullmatch(name) is None:
                raise BadHeader(name, "not a valid header name")
            if len(_TOKENS) < 1024:
                _TOKENS.add(name)
        if not (value.isascii() and value.isprintable()):
            raise BadHeader(name, f"control or non-ASCII characters in {value[:80]!r}")


async def deliver(
    client: HttpClient,
    what: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    concurrency: int,
) -> None:
    """POST a message for an action or a webhook; raises ActionError saying whether a
    retry may help. ``what`` names the sender in the error (``webhook https://…``)."""
    try:
        answer = await client.post(url, body, headers, timeout, concurrency)
    except BadInput as exc:
        # Refused by the egress policy, or a header that cannot be sent:
        # the same request would be refused again.
        raise ActionError(f"{what}: {exc}", retryable=False) from None
    except (HttpError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
        raise ActionError(f"{what}: {type(exc).__name__}: {exc}") from None
    status = answer.status
    if 300 <= status < 400:
        where = f" to {answer.location}" if answer.location else ""
        raise ActionError(
            f"{what} answered {status}, redirecting{where}: redirects are not"
            " followed; give the final URL",
            retryable=False,
        )
    if status >= 400:
        # 4xx means the request itself is wrong and will stay wrong, except
        # for the statuses that ask the sender to come back later.
        retryable = status >= 500 or status in (408, 409, 425, 429)
        wait = retry_delay(answer.retry_after, time.time()) if status in (429, 503) else None
        after = f" (Retry-After: {answer.retry_after})" if wait is not None else ""
        raise ActionError(f"{what} answered {status}{after}", retryable=retryable, retry_after=wait)
