"""Run the peer for a benchmark: Redis queue emptied, then API and worker processes.

The worker runs a prefork pool of 2, one per core, like rulebus on this machine;
the API is one uvicorn process with uvloop and httptools, like rulebus's.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.deploy import REPO, Deployment, Unavailable, child_env, uvicorn_command
from bench.peers.celery_app import config
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
    home = workdir / f"peer-{port}"
    alerts = home / "fraud-archive"
    alerts.mkdir(parents=True)
    db_path = home / "peer.sqlite3"
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(config.SCHEMA)
    env = child_env(
        {
            "PEER_REDIS_URL": redis_url,
            "PEER_DB": str(db_path),
            "PEER_ALERT_DIR": str(alerts),
            "PEER_WEBHOOK_URL": receiver_url + "/fraud",
            "PEER_WEBHOOK_SECRET": secret,
        }
    )
    base = f"http://127.0.0.1:{port}"
    api = Server(
        "peer api",
        uvicorn_command("bench.peers.celery_app.api:app", port),
        home / "api.log",
        health_url=base + "/healthz",
        env=env,
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
        home / "worker.log",
        ready_pattern=r"peer worker ready",
        env=env,
        cwd=REPO,
        start_timeout=60,
    )
    counter = TableCounter(db_path, "events")
    try:
        with running(worker, api):
            yield Deployment("FastAPI+Celery+Redis", base, counter, alerts, [api.pid, worker.pid])
    except StartError as exc:
        raise Unavailable(str(exc)) from None
    finally:
        counter.close()
        _flush_queue(redis_url)
