"""Faults on the distributed backends, with real processes.

The exchange example runs as separate ``rulebus api`` and ``rulebus worker``
processes on NATS JetStream, PostgreSQL and S3 (moto), its webhook pointed at
a local receiver. Clients send events with ids of their own and retry each one
until it is acknowledged; mid-stream, one component fails. Afterwards every
acknowledged event must be in the table once, every flagged buy archived and
notified, nothing dead-lettered and nothing stored twice in the log
(``helpers.check_outcome``).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.distributed.helpers import (
    Api,
    Deployment,
    Load,
    Proc,
    check_outcome,
    paused,
)
from tests.runtime.helpers import EXCHANGE, Receiver
from tests.services.nats import NatsServer
from tests.services.s3 import S3Server

# The session's servers: a missing one skips these tests, or fails them with
# RULEBUS_REQUIRE_SERVICES=1, like every other test that needs it.
pytestmark = pytest.mark.usefixtures("nats_server", "postgres_server", "s3_server")

# What a worker logs once it reads every slot ("reading 16 of 16 slots of stream T…").
ALL_SLOTS = re.compile(r"reading (\d+) of \1 slots")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EVENTS = 1000


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    nats_server: NatsServer,
    s3_server: S3Server,
    postgres_url: str,
    receiver: Receiver,
) -> Iterator[Deployment]:
    """The exchange's processes-to-be on this test's own stream, schema and buckets."""
    # A fault test that failed while a server was down does not take the next ones down.
    nats_server.start()
    s3_server.start()
    name = f"T{secrets.token_hex(6)}"
    env = {
        "RULEBUS_BUS": f"{nats_server.url}?stream={name}",
        # The connections' own name, so that cutting them spares everyone else's.
        "RULEBUS_TABLES": f"{postgres_url}&application_name={application_name(name)}",
        "RULEBUS_OBJECTS": f"s3://?bucket_prefix={name.lower()}-",
        **s3_server.env(),
        "RULEBUS_FRAUD_WEBHOOK_URL": receiver.url,
        "RULEBUS_FRAUD_WEBHOOK_SECRET": SECRET,
    }
    deployment = Deployment(name, EXCHANGE, tmp_path / "data", env)
    failed_before = request.session.testsfailed
    try:
        yield deployment
    finally:
        deployment.close()
        nats_log = f"===== nats-server log =====\n{nats_server.log_tail()}"
        (tmp_path / "processes.log").write_text(f"{deployment.logs(None)}\n{nats_log}")
        if request.session.testsfailed > failed_before:
            print(f"{deployment.logs()}\n{nats_log}")  # pytest shows it with the failure
        nats_server.start()
        s3_server.start()
        try:
            nats_server.delete_streams(name)
        except Exception as exc:
            print(f"could not delete the streams of {name}: {exc!r}")


def application_name(stream: str) -> str:
    return f"rulebus-{stream.lower()}"


class Sampler:
    """Polls ``/admin/stats`` in the background: the most retries and backlog seen."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.max_retrying = 0
        self.max_backlog = 0
        self.errors = 0
        self.timeline: list[tuple[float, int, int, int]] = []  # (s, head, dispatched, retrying)
        self.began = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                stats = self.api.stats()
            except Exception:
                self.errors += 1
                continue
            if "head" not in stats:
                self.errors += 1
                continue
            elapsed = round(time.monotonic() - self.began, 1)
            self.timeline.append((elapsed, stats["head"], stats["dispatched"], stats["retrying"]))
            self.max_retrying = max(self.max_retrying, stats["retrying"])
            self.max_backlog = max(self.max_backlog, stats["head"] - stats["dispatched"])

    def stop(self) -> Sampler:
        self._stop.set()
        self._thread.join()
        return self


def start(deployment: Deployment, apis: int = 1) -> tuple[list[Api], list[Proc]]:
    """API processes and two workers, each worker reading some of the slots."""
    # Started together: each takes a second or two to import and connect.
    started = [deployment.api(wait=False) for _ in range(apis)]
    workers = [deployment.worker(wait=False) for _ in range(2)]
    for api in started:
        api.wait_for(Deployment.API_READY)
    for worker in workers:
        worker.wait_for(Deployment.WORKER_READY)
    for worker in workers:
        worker.wait_for("reading", timeout=15)
    return started, workers


def report(name: str, began: float, load: Load, figures: dict[str, Any], **more: Any) -> None:
    print(f"\n{name}: {time.monotonic() - began:.1f} s; {load.summary()}")
    print(f"  {figures}")
    if more:
        print(f"  {more}")


def test_a_worker_killed_mid_stream_loses_nothing(
    deployment: Deployment, receiver: Receiver
) -> None:
    """A worker killed with SIGKILL mid-stream loses no acknowledged event: the other one takes
    over its slots once their leases run out, and the restarted one takes a share back."""
    began = time.monotonic()
    (api,), (first, second) = start(deployment)
    sampler = Sampler(api)
    load = Load([api.url], EVENTS).start()
    load.wait_acked(EVENTS // 3)
    mark = len(first.output)
    second.kill9()
    # The survivor takes the dead worker's slots over when their leases (6 s) run out.
    took_over = first.wait_for(ALL_SLOTS, timeout=15, start=mark)
    again = deployment.worker("worker-2-restarted")
    again.wait_for("reading", timeout=15)
    load.join()
    figures = check_outcome(deployment, api, load, receiver)
    sampler.stop()
    report(
        "worker kill -9",
        began,
        load,
        figures,
        took_over=took_over.strip(),
        max_backlog=sampler.max_backlog,
    )


def test_nats_killed_mid_stream_loses_nothing(
    deployment: Deployment, receiver: Receiver, nats_server: NatsServer
) -> None:
    """NATS killed with SIGKILL and restarted mid-stream loses no acknowledged event; clients
    that retry through the outage (503s, time-outs) get every event stored exactly once."""
    began = time.monotonic()
    (api,), workers = start(deployment)
    sampler = Sampler(api)
    load = Load([api.url], EVENTS).start()
    load.wait_acked(EVENTS // 3)
    killed = time.monotonic() - sampler.began
    nats_server.kill9()
    time.sleep(2)
    nats_server.start()
    load.join()
    figures = check_outcome(deployment, api, load, receiver)
    sampler.stop()
    assert load.problems, "the clients never noticed the outage"
    reconnected = [len(w.lines("reconnected to NATS")) for w in workers]
    report(
        "nats kill -9",
        began,
        load,
        figures,
        worker_reconnects=reconnected,
        killed_at=round(killed, 1),
        timeline=sampler.timeline[::4],
    )


async def _terminate(server: str, name: str) -> int:
    """Terminate the server processes of connections named ``name``; how many there were."""
    import asyncpg

    conn = await asyncpg.connect(server, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await conn.close()
    return sum(1 for (ok,) in rows if ok)


def test_postgres_connections_cut_mid_stream_lose_nothing(
    deployment: Deployment, receiver: Receiver, postgres_server: str
) -> None:
    """Cutting the workers' PostgreSQL connections in two bursts mid-stream loses no event: the
    failed table writes are retried on new connections.

    The tables URL names this test's connections (``application_name=rulebus-<stream>``,
    passed to the server like any libpq option), and only those are terminated: the
    product's default name, ``rulebus``, is shared by every test and benchmark that
    runs on this PostgreSQL at the same time.
    """
    began = time.monotonic()
    (api,), _ = start(deployment)
    sampler = Sampler(api)
    load = Load([api.url], EVENTS).start()
    cut = []
    for share in (3, 1.5):
        load.wait_acked(int(EVENTS / share))
        # A burst, so that some writes are cut in flight, not only idle connections.
        for _ in range(5):
            cut.append(asyncio.run(_terminate(postgres_server, application_name(deployment.name))))
            time.sleep(0.2)
    assert any(cut), f"no rulebus connection to terminate: {cut}"
    load.join()
    figures = check_outcome(deployment, api, load, receiver)
    sampler.stop()
    report(
        "postgres connections terminated",
        began,
        load,
        figures,
        terminated=cut,
        max_retrying=sampler.max_retrying,
    )


def test_s3_unresponsive_for_10_s_mid_stream_loses_nothing(
    deployment: Deployment, receiver: Receiver, s3_server: S3Server
) -> None:
    """S3 frozen for 10 s mid-stream (SIGSTOP, then SIGCONT) loses nothing: object puts wait
    and complete once it answers again, and every flagged buy is archived and notified.

    Why a pause and not a stop: moto keeps its buckets in memory only (moto_server
    has no persistence option), so a stopped and restarted moto comes back with no
    buckets, and rulebus makes buckets only when it starts: every later put fails
    with NoSuchBucket, which is not retryable, and is dead-lettered (in a trial run,
    355 of 393 alerts). That is moto losing its data, not an S3 outage. SIGSTOP keeps the
    data and makes S3 unreachable as a hung server or a network partition does:
    connections are accepted by the kernel and requests get no answer, so puts
    wait (botocore's read timeout is 30 s) and complete after SIGCONT. A stop that
    refuses connections for 10 s (buckets made again at once) also dead-letters some
    alerts by design: the exchange's retry policy (5 attempts, 0.5 s doubling) gives
    up after 4-8 s.
    """
    began = time.monotonic()
    (api,), _ = start(deployment)
    sampler = Sampler(api)
    load = Load([api.url], EVENTS).start()
    load.wait_acked(EVENTS // 3)
    assert s3_server._proc is not None  # the session server's process, to pause it
    with paused(s3_server._proc.pid):
        time.sleep(10)
        during = api.stats()
    load.join()
    figures = check_outcome(deployment, api, load, receiver)
    sampler.stop()
    report(
        "s3 paused 10 s",
        began,
        load,
        figures,
        stats_at_end_of_pause=during,
        max_backlog=sampler.max_backlog,
        max_retrying=sampler.max_retrying,
    )


def test_an_api_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    deployment: Deployment, receiver: Receiver
) -> None:
    """With two API processes, one killed with SIGKILL mid-stream, clients that retry each id
    on either API lose nothing, and no event is stored twice."""
    began = time.monotonic()
    (doomed, survivor), _ = start(deployment, apis=2)
    load = Load([doomed.url, survivor.url], EVENTS).start()
    load.wait_acked(EVENTS // 3)
    doomed.kill9()
    load.join()
    figures = check_outcome(deployment, survivor, load, receiver)
    assert load.problems, "no request was cut by the kill"
    duplicates = sum(1 for status in load.acked.values() if status == 200)
    report("api kill -9", began, load, figures, answered_duplicate=duplicates)
