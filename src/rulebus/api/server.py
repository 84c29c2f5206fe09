"""Serving the API with uvicorn on a socket we opened, next to the app's runtime."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from rulebus.api.app import build_api
from rulebus.api.auth import Authenticator
from rulebus.errors import RulebusError
from rulebus.runtime import Runtime


@dataclass(frozen=True)
class TLS:
    """A certificate chain and its private key, both PEM files."""

    cert: Path
    key: Path


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling.

    uvicorn re-raises the signal once it has stopped, which would end the
    process before the engine records the batches in hand; our handlers only
    ask the server to stop, and the engine stops after it.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    runtime: Runtime,
    sock: socket.socket,
    stop: asyncio.Event,
    announce: Callable[[str], None],
    before_listening: Callable[[], Awaitable[None]] | None = None,
    *,
    auth: Authenticator,
    tls: TLS | None = None,
) -> None:
    """Serve ``runtime``'s API on ``sock`` until ``stop`` is set or the server ends."""
    config = uvicorn.Config(
        build_api(runtime, auth),
        http="httptools",
        lifespan="off",
        log_level="warning",
        log_config=None,  # its lines go through rulebus.logs, in the chosen format
        access_log=False,
        timeout_graceful_shutdown=10,
        ssl_certfile=tls.cert if tls else None,
        ssl_keyfile=tls.key if tls else None,
    )
    try:
        config.load()  # reads the certificate now, to fail with a clear message
    except (OSError, ssl.SSLError) as exc:
        assert tls is not None
        raise RulebusError(
            f"cannot use --tls-cert {tls.cert} with --tls-key {tls.key}: {exc}"
        ) from None
    server = _Server(config)
    if before_listening is not None:
        await before_listening()
    host, port = sock.getsockname()[:2]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        announce(f"{'https' if tls else 'http'}://{host}:{port}")
    await asyncio.wait(
        {serving, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    server.should_exit = True
    await serving
