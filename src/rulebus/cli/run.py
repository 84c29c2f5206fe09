"""``rulebus up``, ``api``, ``worker`` and ``check``: run and validate an app."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click
import uvloop

from rulebus import metrics
from rulebus.api import access
from rulebus.api.auth import Authenticator
from rulebus.api.server import TLS, serve
from rulebus.backends.registry import is_embedded, open_store, redact
from rulebus.backends.sqlite_bus import Partition
from rulebus.cli.common import backends, backends_option, data_dir_option, options
from rulebus.errors import RulebusError
from rulebus.logs import FORMATS, log_to_stderr
from rulebus.reload import Reloader, registered, running
from rulebus.runtime import Backends, EngineLock, Runtime
from rulebus.supervisor import (
    settle_memory,
    signal_children,
    signal_ready,
    stop_on_signals,
    supervise_all,
)
from rulebus.template import App, load_app

log = logging.getLogger("rulebus.cli")

READY_TIMEOUT = 60.0  # seconds ``up`` waits for its workers before it listens anyway
# Two engine processes use both cores of a small machine; on more, SQLite's
# single writer, not the engine, sets the pace.
WORKERS = 2

app_argument = click.argument("app_dir", metavar="APP", type=click.Path(path_type=Path))
log_level_option = click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
log_format_option = click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(FORMATS),
    help="json: one JSON object per line, with event_id, rule and action where they apply.",
)
access_log_option = click.option(
    "--access-log", is_flag=True, help="Log one line per HTTP request (logger rulebus.access)."
)


def _count_metrics(app: App, data_dir: Path, *, owner: bool) -> None:
    """Count for /metrics in DATA_DIR/metrics, unless the app turns metrics off."""
    if app.metrics:
        metrics.setup(data_dir, owner=owner)


@click.command()
@app_argument
def check(app_dir: Path) -> None:
    """Validate an app folder and print what it declares."""
    app = load_app(app_dir)
    click.echo(f"{app.file}: ok")
    for warning in app.warnings:
        click.echo(f"warning: {warning}", err=True)
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
        auth = "open to anyone" if route.auth == "none" else "needs a key with scope ingest"
        click.echo(f"  route POST {route.path} -> {route.topic}{batch}, {auth}")


def _subscribers(app: App) -> list[str]:
    out = []
    for name, spec in app.notifications.items():
        kinds = ", ".join(s.kind for s in spec.subscribers) or "no subscribers"
        out.append(f"{name} ({kinds})")
    return out


def _listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port))
    except OSError as exc:
        raise RulebusError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


_PEM = click.Path(exists=True, dir_okay=False, path_type=Path)

listen_options = options(
    click.option("--host", default="127.0.0.1", show_default=True),
    click.option(
        "--port",
        default=8080,
        show_default=True,
        type=click.IntRange(0, 65535),
        help="0 picks a free port.",
    ),
    click.option("--tls-cert", type=_PEM, help="Serve HTTPS with this certificate chain (PEM)."),
    click.option("--tls-key", type=_PEM, help="The certificate's private key (PEM)."),
)


def _tls(cert: Path | None, key: Path | None) -> TLS | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise click.UsageError("--tls-cert and --tls-key go together")
    return TLS(cert, key)


def _listen_securely(host: str, port: int, tls: TLS | None) -> socket.socket:
    sock = _listen(host, port)
    if tls is None and not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
        log.warning(
            "serving plain HTTP on %s: API keys and events cross the network unencrypted;"
            " use --tls-cert and --tls-key, or a TLS proxy in front",
            host,
        )
    return sock


@click.command()
@app_argument
@data_dir_option
@backends_option
@listen_options
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help=f"Engine processes; they share the events.  [default: {WORKERS}]",
)
@click.option(
    "--single-process",
    is_flag=True,
    help="Run the engine in this process too, instead of in engine processes.",
)
@log_level_option
@log_format_option
@access_log_option
def up(
    app_dir: Path,
    data_dir: Path,
    host: str,
    port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    workers: int | None,
    single_process: bool,
    log_level: str,
    log_format: str,
    access_log: bool,
    **chosen: Any,
) -> None:
    """Run an app on one host: the HTTP API here, the engine in engine processes."""
    if single_process and workers is not None:
        raise click.UsageError("--workers and --single-process exclude each other")
    where = backends(chosen)
    tls = _tls(tls_cert, tls_key)
    _refuse_a_second_engine(data_dir, where)
    listener = log_to_stderr(log_level, log_format)
    try:
        app = load_app(app_dir)
        sock = _listen_securely(host, port, tls)
        _count_metrics(app, data_dir, owner=True)
        if access_log:
            access.enable()
        commands = None
        if not single_process:
            commands = _engine_commands(
                app_dir, data_dir, where, (log_level, log_format), workers or WORKERS
            )
        _run(_serve(app, data_dir, where, sock, commands, tls))
    finally:
        listener.stop()


def _refuse_a_second_engine(data_dir: Path, where: Backends) -> None:
    """``up`` on an embedded data directory whose engine already runs elsewhere fails.

    It would only wait for that engine to stop, serving an API meanwhile, which
    nobody starting ``up`` means; ``rulebus api`` adds an API process on purpose.
    """
    if not is_embedded(where.bus) or not EngineLock(data_dir).held_elsewhere():
        return
    others = ", ".join(
        f"pid {p.pid} ({p.role})" for p in running(data_dir) if p.role in ("up", "worker")
    )
    raise click.ClickException(
        f"{data_dir} is in use by another rulebus engine{f', {others}' if others else ''}: "
        "stop it first, or run `rulebus api` for one more API process on it"
    )


@click.command()
@app_argument
@data_dir_option
@backends_option
@listen_options
@log_level_option
@log_format_option
@access_log_option
@click.option(
    "--no-mqtt",
    is_flag=True,
    help="Leave the app's MQTT subscriptions to another process (a broker lets one"
    " connection hold a client id).",
)
def api(
    app_dir: Path,
    data_dir: Path,
    host: str,
    port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    log_level: str,
    log_format: str,
    access_log: bool,
    no_mqtt: bool,
    **chosen: Any,
) -> None:
    """Serve an app's HTTP API only; ``rulebus worker`` processes run its rules."""
    tls = _tls(tls_cert, tls_key)
    listener = log_to_stderr(log_level, log_format)
    try:
        app = load_app(app_dir)
        sock = _listen_securely(host, port, tls)
        _count_metrics(app, data_dir, owner=True)
        if access_log:
            access.enable()
        where = backends(chosen)
        _run(_serve(app, data_dir, where, sock, None, tls, engine=False, mqtt=not no_mqtt))
    finally:
        listener.stop()


def _partition(ctx: click.Context, param: click.Parameter, value: str | None) -> Partition | None:
    if value is None:
        return None
    index, _, count = value.partition("/")
    try:
        return Partition(int(index), int(count))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected K/N with 0 <= K < N") from None


@click.command()
@app_argument
@data_dir_option
@backends_option
@log_level_option
@log_format_option
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Engine processes to run here; they share the events.",
)
@click.option("--ready-fd", type=int, hidden=True, help="Write a line here once running.")
@click.option(
    "--partition",
    hidden=True,
    callback=_partition,
    help="Run partition K/N of an embedded log only, under a supervisor holding its lock.",
)
def worker(
    app_dir: Path,
    data_dir: Path,
    log_level: str,
    log_format: str,
    processes: int,
    ready_fd: int | None,
    partition: Partition | None,
    **chosen: Any,
) -> None:
    """Run an app's rules and functions, without the HTTP API."""
    where = backends(chosen)
    listener = log_to_stderr(log_level, log_format)
    try:
        app = load_app(app_dir)
        # An engine process a supervisor started counts on, with what its
        # predecessors left: only a process started by hand clears up.
        _count_metrics(app, data_dir, owner=ready_fd is None)
        if processes > 1:
            logs = (log_level, log_format)
            commands = _engine_commands(app_dir, data_dir, where, logs, processes)
            _run(_supervise(app, data_dir, where, commands))
        else:
            _run(_work(app, data_dir, where, ready_fd, partition))
    finally:
        listener.stop()


def _engine_commands(
    app_dir: Path, data_dir: Path, where: Backends, log_args: tuple[str, str], count: int
) -> list[list[str]]:
    """The command lines of ``count`` engine processes sharing the app's events."""
    # The URLs go to the children through the environment: on a command
    # line, every user of the machine could read their passwords with ps.
    os.environ.update(
        RULEBUS_BUS=where.bus, RULEBUS_TABLES=where.tables, RULEBUS_OBJECTS=where.objects
    )
    base = [
        sys.executable,
        "-m",
        "rulebus",
        "worker",
        str(app_dir),
        "--data-dir",
        str(data_dir),
        "--log-level",
        log_args[0],
        "--log-format",
        log_args[1],
    ]
    if not is_embedded(where.bus):
        return [base] * count
    # An embedded log is split into fixed partitions, one per process.
    return [[*base, "--partition", str(Partition(index, count))] for index in range(count)]


def _run(main: Coroutine[Any, Any, None]) -> None:
    uvloop.run(main)


async def _supervise(app: App, data_dir: Path, where: Backends, commands: list[list[str]]) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    lock_dir = data_dir if is_embedded(where.bus) else None
    # It runs no rules itself: it checks the file, then passes the reload on.
    Reloader(data_dir, "worker", app, _nothing, forward=_reload_children).install()
    with registered(data_dir, "worker", app.file):
        await supervise_all(commands, stop, asyncio.Event(), lock_dir)


async def _nothing(app: App) -> None:
    return None


def _reload_children() -> list[int]:
    return signal_children(signal.SIGHUP)


async def _work(
    app: App, data_dir: Path, where: Backends, ready_fd: int | None, partition: Partition | None
) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    runtime = Runtime(app, data_dir, where, partition=partition)
    await runtime.start()
    Reloader(data_dir, "worker", app, runtime.reload).install()
    settle_memory()
    signal_ready(ready_fd)
    # An engine process of ``up`` or ``worker --processes`` gets reloads
    # from its supervisor; one on its own is found through the data dir.
    registration = (
        registered(data_dir, "worker", app.file) if ready_fd is None else contextlib.nullcontext()
    )
    if ready_fd is None:
        click.echo(f"rulebus: app {app.name} running its rules on bus {redact(where.bus)}")
    try:
        with registration:
            await stop.wait()
    finally:
        await runtime.stop()


async def _serve(
    app: App,
    data_dir: Path,
    where: Backends,
    sock: socket.socket,
    commands: list[list[str]] | None,
    tls: TLS | None,
    *,
    engine: bool = True,
    mqtt: bool = True,
) -> None:
    runtime = Runtime(app, data_dir, where, engine=engine and commands is None, bridges=mqtt)
    await runtime.start()
    auth = Authenticator(open_store("keys", where.bus, data_dir))
    try:
        await auth.start()
    except BaseException:
        await runtime.stop()
        raise
    settle_memory()
    stop = asyncio.Event()
    stop_on_signals(stop)
    supervisor = None

    async def engines_ready() -> None:
        nonlocal supervisor
        if commands is None:
            return
        ready = asyncio.Event()
        lock_dir = data_dir if is_embedded(where.bus) else None
        supervisor = asyncio.create_task(supervise_all(commands, stop, ready, lock_dir))
        # Listen once the engine runs, so that what ``up`` announces works.
        # A worker that waits for another engine's lock should not hold the
        # API back for long, though: it publishes to the shared log anyway.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), READY_TIMEOUT)

    def announce(url: str) -> None:
        stores = f"data in {data_dir}" if is_embedded(where.bus) else f"bus {redact(where.bus)}"
        click.echo(f"rulebus: app {app.name} listening on {url} ({stores})")

    role = "up" if engine else "api"
    forward = _reload_children if commands is not None else None
    Reloader(data_dir, role, app, runtime.reload, forward=forward).install()
    try:
        with registered(data_dir, role, app.file):
            await serve(runtime, sock, stop, announce, engines_ready, auth=auth, tls=tls)
    finally:
        stop.set()
        if supervisor is not None:
            await supervisor
        await auth.stop()
        await runtime.stop()
        click.echo("rulebus: stopped")
