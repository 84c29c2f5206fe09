"""The webhook receiver, in its own process: ``python -m bench.receiver --port P``.

Counts ``POST``s to any path, the distinct event ids among them (delivery is
at-least-once, so a retry must not count twice) and, with ``--secret``, the ones whose
Standard Webhooks signature does not verify. ``GET /count`` returns the counters.

It stands for a subscriber on another machine, yet shares the benchmark's two
cores, so it is kept lean: an asyncio protocol on uvloop with httptools' parser
(a few dozen microseconds a request, where aiohttp's server took a quarter of a
core at 4,000 webhooks a second). It still reads every body and checks every
signature, for rulebus and the peer alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import httptools
import uvloop

from bench.signing import verify

_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
_UNAUTHORIZED = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"


def _event_id(body: bytes) -> str | None:
    """The event id in a notification body, at the top or under payload/event/data."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    for candidate in (doc, doc.get("payload"), doc.get("event"), doc.get("data")):
        found = candidate.get("id") if isinstance(candidate, dict) else None
        if isinstance(found, str):
            return found
    return None


class Counters:
    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.seen: set[str] = set()
        self.counts = {"posts": 0, "unique": 0, "bad_signature": 0, "unreadable": 0}

    def receive(self, headers: dict[str, str], body: bytes) -> bytes:
        counts = self.counts
        counts["posts"] += 1
        if self.secret is not None and not verify(self.secret, headers, body):
            counts["bad_signature"] += 1
            return _UNAUTHORIZED
        event_id = _event_id(body) or headers.get("webhook-id")
        if event_id is None:
            counts["unreadable"] += 1
        elif event_id not in self.seen:
            self.seen.add(event_id)
            counts["unique"] += 1
        return _NO_CONTENT


def _answer(status: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; answers in order, one request at a time."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method()
        if method == b"POST":
            answer = self.counters.receive(self.headers, b"".join(self.body))
        elif self.url == b"/count":
            answer = _answer(
                "200 OK", json.dumps(self.counters.counts).encode(), "application/json"
            )
        elif self.url == b"/healthz":
            answer = _answer("200 OK", b"ok", "text/plain")
        else:
            answer = _answer("404 Not Found", b"", "text/plain")
        self.transport.write(answer)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int, secret: str | None) -> None:
    counters = Counters(secret)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(counters), "127.0.0.1", port, backlog=1024)
    print(f"receiver listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", default=None, help="whsec_... to verify signatures")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.secret))


if __name__ == "__main__":
    main()
