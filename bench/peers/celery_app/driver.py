"""Run the peer for a benchmark: Redis queue emptied, then API and worker processes.

The worker runs a prefork pool of 2, one per core, like rulebus on this machine;
the API is one uvicorn process with uvloop and httptools, like rulebus's.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.deploy import REPO, Deployment, Unavailable, uvicorn_command
from bench.peers.celery_app import config
from bench.peers.common import prepare
from bench.proc import Server, StartError, free_port, running
from bench.stores import TableCounter

WORKER_CONCURRENCY = 2


def _flush_queue(url: str) -> None:
    try:
        import redis
    except ImportError as exc:
        raise Unavailable("the peer needs the bench extra: pip install -e '.[bench]'") from exc
    try:
        redis.Redis.from_url(url).flushdb()
    except redis.RedisError as exc:
        raise Unavailable(f"Redis is not reachable at {url}: {exc}") from exc


@contextlib.contextmanager
def celery_peer(
    workdir: Path, receiver_url: str, secret: str, redis_url: str = config.REDIS_URL
) -> Iterator[Deployment]:
    """Start the peer in ``workdir/peer-<port>``; yields its Deployment."""
    _flush_queue(redis_url)
    port = free_port()
    home = prepare(workdir / f"peer-{port}", receiver_url, secret, {"PEER_REDIS_URL": redis_url})
    base = f"http://127.0.0.1:{port}"
    api = Server(
        "peer api",
        uvicorn_command("bench.peers.celery_app.api:app", port),
        home.path / "api.log",
        health_url=base + "/healthz",
        env=home.env,
        cwd=REPO,
    )
    worker = Server(
        "peer worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.peers.celery_app.tasks",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        home.path / "worker.log",
        ready_pattern=r"peer worker ready",
        env=home.env,
        cwd=REPO,
        start_timeout=60,
    )
    counter = TableCounter(home.db_path, "events")
    try:
        with running(worker, api):
            yield Deployment(
                "FastAPI+Celery+Redis", base, counter, home.alerts, [api.pid, worker.pid]
            )
    except StartError as exc:
        raise Unavailable(str(exc)) from None
    finally:
        counter.close()
        _flush_queue(redis_url)
