"""What the actions that send to a server of their own (``amqp``, ``redis_stream``,
``nats``) share: the server's URL, from the app file or the environment, and a
connection opened at the first send."""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from rulebus.actions.base import Declared
from rulebus.backends.registry import redact
from rulebus.config.options import Options

C = TypeVar("C")

# Seconds to wait for a connection, or for the server to confirm what was sent.
TIMEOUT = 10.0


def server_url(opts: Options, declared: Declared, schemes: tuple[str, ...]) -> str:
    """``url``, or ``url_env`` naming the environment variable that holds it.

    Fails at the key unless the URL has one of ``schemes`` and a host; a
    password written in the app file is warned about (the app file is often
    in version control).
    """
    literal = opts.optional_str("url")
    variable = opts.optional_str("url_env")
    wanted = " or ".join(f"{scheme}://" for scheme in schemes)
    if literal and variable:
        opts.fail("url_env", "give either url or url_env, not both")
    if variable:
        key, url = "url_env", os.environ.get(variable, "")
        if not url:
            opts.fail("url_env", f"the environment variable {variable} is not set")
        shown = f"the URL in {variable}"
    elif literal:
        key, url, shown = "url", literal, repr(redact(literal))
    else:
        opts.missing("url", f"a {wanted} URL (or url_env)")
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises for a port that is not a number)
    except ValueError:
        opts.fail(key, f"expected a {wanted} URL with a host, got {shown}: bad port")
    if parts.scheme not in schemes or not parts.hostname or any(c.isspace() for c in url):
        opts.fail(key, f"expected a {wanted} URL with a host, got {shown}")
    if key == "url" and parts.password:
        declared.warn(opts, "url", "a password written in the app file: use url_env")
    return url


class Connection(Generic[C]):
    """One action's connection to its server, opened at the first send and kept.

    Concurrent batches wait for the same connection. A send that finds the
    connection lost calls ``reset``; the next one connects again.
    """

    def __init__(
        self, connect: Callable[[], Awaitable[C]], disconnect: Callable[[C], Awaitable[None]]
    ) -> None:
        self._connect = connect
        self._disconnect = disconnect
        self._client: C | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> C:
        async with self._lock:
            if self._client is None:
                self._client = await self._connect()
            return self._client

    async def reset(self, client: C) -> None:
        """Drop ``client`` if it is still the current one (another batch may have
        replaced it already)."""
        async with self._lock:
            if self._client is client:
                self._client = None
                await self._quietly(client)

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                client, self._client = self._client, None
                await self._quietly(client)

    async def _quietly(self, client: C) -> None:
        # A lost connection may fail to close in any way its library has; it is gone either way.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._disconnect(client), TIMEOUT)
