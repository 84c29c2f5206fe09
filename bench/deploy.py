"""Start the systems under test, each in its own process, and say where they are.

A :class:`Deployment` is what every figure needs from a running pipeline: where to
post, where its rows and fraud objects land, and which process trees to weigh.
rulebus and the Celery peer both produce one, so the figures treat them alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proc import Server, StartError, free_port
from bench.stores import TableCounter

REPO = Path(__file__).resolve().parent.parent
EXCHANGE = REPO / "examples" / "exchange"

# What figure 2's baseline turns off: top-level app-file settings added to a
# copy of the exchange, whose pipeline is timed side by side with the exchange
# as it is. One key per feature whose cost figure 2 is to show.
BASELINE_SETTINGS: dict[str, Any] = {"metrics": {"enabled": False}, "trace": {"enabled": False}}


class Unavailable(RuntimeError):
    """A system under test cannot run here; the figure is reported as n/a with this reason."""


@dataclass
class Deployment:
    name: str
    base_url: str
    table: TableCounter
    alerts_dir: Path | None
    pids: list[int] = field(default_factory=list)
    single_path: str = "/event"
    batch_path: str = "/events"
    # For stores that are not files here (S3): counts the fraud objects.
    count_objects: Callable[[], int] | None = None
    # When set, the run is complete only once it says the pipeline has nothing
    # left to do (rulebus's /admin/stats): the evidence is then final.
    settled: Callable[[], bool] | None = None

    @property
    def single_url(self) -> str:
        return self.base_url + self.single_path

    @property
    def batch_url(self) -> str:
        return self.base_url + self.batch_path


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    """``server`` running for the block, stopped after it; one that cannot start makes
    the figure n/a."""
    try:
        server.start()
    except StartError as exc:
        raise Unavailable(str(exc)) from None
    try:
        yield server
    finally:
        server.stop()


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the suite's own child processes: ``bench`` importable."""
    path = os.environ.get("PYTHONPATH")
    return {
        "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO),
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


@contextlib.contextmanager
def receiver(workdir: Path, secret: str | None) -> Iterator[str]:
    """The webhook receiver in its own process; yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.receiver", "--port", str(port)]
    if secret:
        cmd += ["--secret", secret]
    base = f"http://127.0.0.1:{port}"
    server = Server(
        "webhook receiver",
        cmd,
        workdir / f"receiver-{port}.log",
        health_url=base + "/healthz",
        env=child_env(),
        cwd=REPO,
    )
    server.start()
    try:
        yield base
    finally:
        server.stop()


def uvicorn_command(app: str, port: int) -> list[str]:
    """An ASGI app served the way rulebus serves its API: one uvicorn, uvloop, httptools."""
    return [
        sys.executable, "-m", "uvicorn", app,
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


@contextlib.contextmanager
def bare_stack(workdir: Path) -> Iterator[Deployment]:
    """Figure 1's ceiling: bench.bare_app under uvicorn, configured as rulebus runs it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = uvicorn_command("bench.bare_app:app", port)
    server = Server(
        "bare stack",
        cmd,
        workdir / f"bare-{port}.log",
        health_url=base + "/healthz",
        env=child_env(),
        cwd=REPO,
    )
    server.start()
    try:
        yield Deployment(
            "bare stack", base, TableCounter(workdir / "none.sqlite3", "none"), None, [server.pid]
        )
    finally:
        server.stop()


def rulebus_command() -> Path:
    """The ``rulebus`` console script of this interpreter's environment."""
    return Path(sys.executable).parent / "rulebus"


def rulebus_unavailable(app: Path = EXCHANGE) -> str | None:
    """Why ``rulebus up APP`` cannot be tried at all, or None when it can."""
    if not rulebus_command().exists():
        return f"{rulebus_command()} is not installed (pip install -e .)"
    if not (app / "rulebus.yaml").exists():
        return f"{app / 'rulebus.yaml'} does not exist yet"
    return None


@contextlib.contextmanager
def rulebus(
    app: Path,
    data_dir: Path,
    *,
    table: str = "events",
    bucket: str | None = "fraud-archive",
    env: Mapping[str, str] | None = None,
) -> Iterator[Deployment]:
    """``rulebus up APP --data-dir DIR`` on a free port, stopped with SIGTERM afterwards."""
    reason = rulebus_unavailable(app)
    if reason is not None:
        raise Unavailable(f"rulebus runtime not available: {reason}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        str(rulebus_command()),
        "up",
        str(app),
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = Server(
        "rulebus",
        cmd,
        data_dir.parent / f"{data_dir.name}-rulebus.log",
        health_url=base + "/healthz",
        ready_pattern=r"listening on http://",
        env=dict(env or {}),
        cwd=REPO,
        start_timeout=60,
    )
    try:
        server.start()
    except StartError as exc:
        raise Unavailable(f"rulebus runtime not available: {exc}") from None
    counter = TableCounter(data_dir / "tables.sqlite3", table)
    alerts = data_dir / "buckets" / bucket if bucket else None
    try:
        yield Deployment("rulebus", base, counter, alerts, [server.pid])
    finally:
        counter.close()
        server.stop(timeout=30)


def exchange_with(workdir: Path, settings: Mapping[str, Any]) -> Path:
    """A copy of the exchange example in ``workdir`` with ``settings`` added to its app file."""
    app = workdir / "exchange-baseline"
    if not app.exists():
        shutil.copytree(EXCHANGE, app, ignore=shutil.ignore_patterns("__pycache__"))
        with (app / "rulebus.yaml").open("a") as file:
            for key, value in settings.items():
                file.write(f"\n{key}: {json.dumps(value)}\n")  # JSON is YAML's flow style
    return app


@contextlib.contextmanager
def rulebus_exchange(
    workdir: Path, receiver_url: str, secret: str, app: Path = EXCHANGE
) -> Iterator[Deployment]:
    """The exchange example (or ``app``, a copy) with its fraud webhook pointed at the receiver."""
    data_dir = workdir / f"rulebus-data-{free_port()}"
    env = {
        "RULEBUS_FRAUD_WEBHOOK_URL": receiver_url + "/fraud",
        "RULEBUS_FRAUD_WEBHOOK_SECRET": secret,
    }
    with rulebus(app, data_dir, env=env) as deployment:
        yield deployment


@contextlib.contextmanager
def rulebus_baseline(workdir: Path, receiver_url: str, secret: str) -> Iterator[Deployment]:
    """The exchange with ``BASELINE_SETTINGS``: figure 2's baseline."""
    app = exchange_with(workdir, BASELINE_SETTINGS)
    with rulebus_exchange(workdir, receiver_url, secret, app) as deployment:
        yield deployment
