"""Serving the API with uvicorn on a socket we opened, next to the app's runtime."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn

from rulebus.api.app import build_api
from rulebus.runtime import Runtime


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
) -> None:
    """Serve ``runtime``'s API on ``sock`` until ``stop`` is set or the server ends."""
    config = uvicorn.Config(
        build_api(runtime),
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config)
    if before_listening is not None:
        await before_listening()
    host, port = sock.getsockname()[:2]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        announce(f"http://{host}:{port}")
    await asyncio.wait(
        {serving, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    server.should_exit = True
    await serving
