"""``rulebus up`` and ``rulebus check``: run and validate an app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import queue
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import click
import uvicorn

from rulebus.api.app import build_api
from rulebus.cli.common import data_dir_option
from rulebus.errors import RulebusError
from rulebus.runtime import Runtime
from rulebus.template import App, load_app


@click.command()
@click.argument("app_dir", metavar="APP", type=click.Path(path_type=Path))
def check(app_dir: Path) -> None:
    """Validate an app folder and print what it declares."""
    app = load_app(app_dir)
    click.echo(f"{app.file}: ok")
    click.echo(f"  tables:        {', '.join(app.tables) or '-'}")
    click.echo(f"  buckets:       {', '.join(app.buckets) or '-'}")
    click.echo(f"  notifications: {', '.join(_subscribers(app)) or '-'}")
    click.echo(f"  functions:     {', '.join(app.functions) or '-'}")
    for name, rule in app.rules.items():
        state = "" if rule.enabled else " (disabled)"
        actions = ", ".join(a.kind for a in rule.actions)
        click.echo(f"  rule {name}{state}: {rule.compiled.topic_filter.text} -> {actions}")
    for route in app.routes:
        batch = f" (batch: POST {route.batch_path})" if route.batch_path else ""
        click.echo(f"  route POST {route.path} -> {route.topic}{batch}")


def _subscribers(app: App) -> list[str]:
    out = []
    for name, spec in app.notifications.items():
        kinds = ", ".join(s.kind for s in spec.subscribers) or "no subscribers"
        out.append(f"{name} ({kinds})")
    return out


@click.command()
@click.argument("app_dir", metavar="APP", type=click.Path(path_type=Path))
@data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int, help="0 picks a free port.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def up(app_dir: Path, data_dir: Path, host: str, port: int, log_level: str) -> None:
    """Run an app: HTTP API, engine and functions in one process."""
    listener = _log_to_stderr(log_level)
    app = load_app(app_dir)
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise RulebusError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    import uvloop

    try:
        uvloop.run(_serve(app, data_dir, sock))
    finally:
        listener.stop()


def _log_to_stderr(level: str) -> logging.handlers.QueueListener:
    """Log through a queue, so writing log lines never blocks the event loop."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    listener = logging.handlers.QueueListener(records, stream)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level.upper())
    listener.start()
    return listener


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling.

    uvicorn re-raises the signal once it has stopped, which would end the
    process before the engine records the batch in hand; our handlers only
    ask the server to stop, and the engine stops after it.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(app: App, data_dir: Path, sock: socket.socket) -> None:
    runtime = Runtime(app, data_dir)
    await runtime.start()
    config = uvicorn.Config(
        build_api(runtime),
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    host, port = sock.getsockname()[:2]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        click.echo(
            f"rulebus: app {app.name} listening on http://{host}:{port} (data in {data_dir})"
        )
    try:
        await serving
    finally:
        await runtime.stop()
        click.echo("rulebus: stopped")
