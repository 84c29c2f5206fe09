"""``rulebus up``, ``rulebus worker`` and ``rulebus check``: run and validate an app."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import click
import uvicorn
import uvloop

from rulebus.api.app import build_api
from rulebus.backends.base import Partition
from rulebus.cli.common import data_dir_option
from rulebus.errors import RulebusError
from rulebus.logs import log_to_stderr
from rulebus.runtime import EngineLock, Runtime
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
        click.echo(f"  route POST {route.path} -> {route.topic}{batch}")


def _subscribers(app: App) -> list[str]:
    out = []
    for name, spec in app.notifications.items():
        kinds = ", ".join(s.kind for s in spec.subscribers) or "no subscribers"
        out.append(f"{name} ({kinds})")
    return out


@click.command()
@app_argument
@data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 picks a free port.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help=f"Engine worker processes; each takes its share of the events.  [default: {WORKERS}]",
)
@click.option(
    "--single-process",
    is_flag=True,
    help="Run the engine in this process too, instead of in worker processes.",
)
@log_level_option
def up(
    app_dir: Path,
    data_dir: Path,
    host: str,
    port: int,
    workers: int | None,
    single_process: bool,
    log_level: str,
) -> None:
    """Run an app: the HTTP API here, the engine and functions in worker processes."""
    if single_process and workers is not None:
        raise click.UsageError("--workers and --single-process exclude each other")
    listener = log_to_stderr(log_level)
    try:
        app = load_app(app_dir)
        try:
            sock = socket.create_server((host, port))
        except OSError as exc:
            raise RulebusError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        count = workers or WORKERS
        commands = [
            [
                sys.executable,
                "-m",
                "rulebus",
                "worker",
                str(app_dir),
                "--data-dir",
                str(data_dir),
                "--log-level",
                log_level,
                "--partition",
                str(Partition(index, count)),
            ]
            for index in range(count)
        ]
        _run(_serve(app, data_dir, sock, None if single_process else commands))
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
@log_level_option
@click.option("--ready-fd", type=int, hidden=True, help="Write a line here once running.")
@click.option(
    "--partition",
    hidden=True,
    callback=_partition,
    help="Run partition K/N only, under a supervisor that holds the engine lock.",
)
def worker(
    app_dir: Path,
    data_dir: Path,
    log_level: str,
    ready_fd: int | None,
    partition: Partition | None,
) -> None:
    """Run an app's engine and functions, without the HTTP API."""
    listener = log_to_stderr(log_level)
    try:
        app = load_app(app_dir)
        _run(_work(app, data_dir, ready_fd, partition))
    finally:
        listener.stop()


def _run(main: Coroutine[Any, Any, None]) -> None:
    uvloop.run(main)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _work(
    app: App, data_dir: Path, ready_fd: int | None, partition: Partition | None
) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    runtime = Runtime(app, data_dir, partition=partition)
    await runtime.start()
    _settle_memory()
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    try:
        await stop.wait()
    finally:
        await runtime.stop()


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling.

    uvicorn re-raises the signal once it has stopped, which would end the
    process before the engine records the batches in hand; our handlers only
    ask the server to stop, and the engine stops after it.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _die_with_parent() -> None:
    """In the worker, before exec: a kill -9 of ``rulebus up`` takes the worker with it."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


async def _supervise_all(
    data_dir: Path, commands: list[list[str]], stop: asyncio.Event, ready: asyncio.Event
) -> None:
    """Hold the data directory's engine lock and keep one worker per partition running.

    ``ready`` is set once each worker runs its engine or has exited trying.
    """
    lock = EngineLock(data_dir)
    locking = asyncio.ensure_future(lock.acquire())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({locking, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not locking.done():
        locking.cancel()
        lock.release()
        ready.set()
        return
    stopping.cancel()
    readies = [asyncio.Event() for _ in commands]

    async def all_ready() -> None:
        for each in readies:
            await each.wait()
        ready.set()

    try:
        await asyncio.gather(
            all_ready(),
            *(_supervise(c, stop, r) for c, r in zip(commands, readies, strict=True)),
        )
    finally:
        ready.set()
        lock.release()


async def _supervise(command: list[str], stop: asyncio.Event, ready: asyncio.Event) -> None:
    """Keep the worker running until ``stop``, then stop it gracefully.

    ``ready`` is set once the first worker has loaded the app and started its
    engine (or has exited trying).
    """
    while True:
        read_end, write_end = os.pipe()
        proc = await asyncio.create_subprocess_exec(
            *command,
            "--ready-fd",
            str(write_end),
            env=_worker_environment(),
            pass_fds=(write_end,),
            preexec_fn=_die_with_parent,
        )
        os.close(write_end)
        signalled = asyncio.ensure_future(_await_ready(read_end, ready))
        waiting = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await waiting
            await signalled
            return
        stopping.cancel()
        await signalled
        log.error("engine worker exited with %s; restarting it", proc.returncode)
        await asyncio.sleep(1)


def _settle_memory() -> None:
    """After loading: keep what loading made out of the garbage collector's scans.

    The compiled rules, modules and their objects live as long as the
    process; without this, every full collection walks them all again, and
    that walk is a pause in the middle of some event's delivery.
    """
    gc.collect()
    gc.freeze()
    # Events make many short-lived dicts and lists that reference counting
    # frees; with the default threshold (700 allocations) the young
    # generation was collected several times per batch, about 5% of a
    # worker's CPU, to find cycles that are rare here.
    gc.set_threshold(20_000, 10, 10)


def _worker_environment() -> dict[str, str]:
    """The worker's environment: ours, with fewer malloc arenas unless set already.

    glibc gives each thread that allocates its own arena; the worker's
    threads (writers, functions, object writers) would each keep one, and
    memory freed in one cannot serve another. Two keep the peak RSS down.
    """
    env = dict(os.environ)
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


async def _await_ready(read_end: int, ready: asyncio.Event) -> None:
    """Set ``ready`` on the worker's line, or at end of file if it exits first."""
    try:
        await asyncio.to_thread(os.read, read_end, 64)
    finally:
        os.close(read_end)
        ready.set()


async def _serve(
    app: App, data_dir: Path, sock: socket.socket, workers: list[list[str]] | None
) -> None:
    runtime = Runtime(app, data_dir, engine=workers is None)
    await runtime.start()
    _settle_memory()
    config = uvicorn.Config(
        build_api(runtime),
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = _Server(config)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    ready = asyncio.Event()
    if workers is None:
        ready.set()
        supervisor = None
    else:
        supervisor = asyncio.create_task(_supervise_all(data_dir, workers, stop, ready))
        # Listen once the engine runs, so that what ``up`` announces works.
        # A worker that waits for another engine's lock should not hold the
        # API back for long, though: it publishes to the shared log anyway.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), READY_TIMEOUT)
    host, port = sock.getsockname()[:2]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        click.echo(
            f"rulebus: app {app.name} listening on http://{host}:{port} (data in {data_dir})"
        )
    try:
        await asyncio.wait(
            {serving, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        server.should_exit = True
        await serving
    finally:
        stop.set()
        if supervisor is not None:
            await supervisor
        await runtime.stop()
        click.echo("rulebus: stopped")
