"""Run the peer for a benchmark: a fresh JetStream stream, then API and worker processes.

Two worker processes, one per core, like rulebus on this machine; the API is one
uvicorn process with uvloop and httptools, like rulebus's. The stream keeps its
messages in files (JetStream's file storage, which syncs to disk every two minutes
by default: an acknowledged event survives a crash of the processes, not of the
machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.deploy import REPO, Deployment, Unavailable, uvicorn_command
from bench.peers.common import prepare
from bench.peers.faststream_app import config
from bench.proc import Server, StartError, free_port, running
from bench.stores import TableCounter

WORKERS = 2


async def _fresh_stream(url: str, *, create: bool = True) -> None:
    """Delete the peer's stream and all its consumers; then create it empty."""
    try:
        import nats
        from nats.js.errors import NotFoundError
    except ImportError as exc:
        raise Unavailable("the peer needs the bench extra: pip install -e '.[bench]'") from exc
    try:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as exc:
        raise Unavailable(f"NATS is not reachable at {url}: {exc}") from exc
    try:
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(config.STREAM)
        if create:
            await js.add_stream(name=config.STREAM, subjects=[config.SUBJECTS], storage="file")
    except Exception as exc:
        raise Unavailable(f"NATS at {url} has no JetStream: {exc}") from exc
    finally:
        await nc.close()


@contextlib.contextmanager
def faststream_peer(
    workdir: Path, receiver_url: str, secret: str, nats_url: str = config.NATS_URL
) -> Iterator[Deployment]:
    """Start the peer in ``workdir/faststream-<port>``; yields its Deployment."""
    asyncio.run(_fresh_stream(nats_url))
    port = free_port()
    home = prepare(
        workdir / f"faststream-{port}", receiver_url, secret, {"PEER_NATS_URL": nats_url}
    )
    base = f"http://127.0.0.1:{port}"
    api = Server(
        "faststream api",
        uvicorn_command("bench.peers.faststream_app.api:app", port),
        home.path / "api.log",
        health_url=base + "/healthz",
        env=home.env,
        cwd=REPO,
    )
    workers = [
        Server(
            f"faststream worker {i}",
            [sys.executable, "-m", "bench.peers.faststream_app.worker"],
            home.path / f"worker-{i}.log",
            ready_pattern=r"peer worker ready",
            env=home.env,
            cwd=REPO,
            start_timeout=60,
        )
        for i in range(WORKERS)
    ]
    counter = TableCounter(home.db_path, "events")
    try:
        with running(*workers, api):
            yield Deployment(
                "FastAPI+FastStream+NATS",
                base,
                counter,
                home.alerts,
                [api.pid, *(w.pid for w in workers)],
            )
    except StartError as exc:
        raise Unavailable(str(exc)) from None
    finally:
        counter.close()
        with contextlib.suppress(Unavailable):
            asyncio.run(_fresh_stream(nats_url, create=False))
