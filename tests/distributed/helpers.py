"""Real processes for the fault tests: ``rulebus api`` and ``rulebus worker`` on the
distributed backends, a load client that retries with idempotency keys, and the
checks of the end state (nothing lost, nothing stored twice, the whole pipeline run).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fraud import is_fraud

from tests.runtime.helpers import Receiver, child_env, free_port, make_key


class AlertsStoredTwice(AssertionError):
    """Everything checked out except that some alerts that fraud-check published (events
    with ids derived from their delivery) are in the log more than once."""


class Proc:
    """One rulebus process; its output (stdout and stderr) is drained into ``output``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._seen = threading.Condition()

    def start(self, ready: str | None, timeout: float = 30) -> Proc:
        """Start it and wait for a line containing ``ready`` (unless None)."""
        self.output.append(f"--- {self.name}: {' '.join(self.args[2:])}\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rulebus", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        if ready is not None:
            self.wait_for(ready, timeout)
        return self

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._seen:
                self.output.append(line)
                self._seen.notify_all()
        with self._seen:
            self.output.append(f"--- {self.name} exited with {proc.wait()}\n")
            self._seen.notify_all()

    def wait_for(self, text: str | re.Pattern[str], timeout: float = 30, start: int = 0) -> str:
        """The first line from index ``start`` on that contains ``text`` (or matches it)."""

        def matches(line: str) -> bool:
            return bool(text.search(line)) if isinstance(text, re.Pattern) else text in line

        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for line in self.output[start:]:
                    if matches(line):
                        return line
                start = max(start, len(self.output))
                if self.proc is not None and self.proc.poll() is not None:
                    # Let the drain thread catch up before giving up.
                    self._seen.wait(0.2)
                    if not any(matches(line) for line in self.output[start:]):
                        raise AssertionError(
                            f"{self.name} exited before printing {text!r}:\n{self.tail()}"
                        )
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.name} did not print {text!r} in {timeout} s:\n{self.tail()}"
                    )
                self._seen.wait(left)

    def lines(self, text: str) -> list[str]:
        with self._seen:
            return [line for line in self.output if text in line]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int | None = 60) -> str:
        with self._seen:
            return "".join(self.output[-lines:] if lines else self.output)


class Api(Proc):
    def __init__(
        self, name: str, args: list[str], env: dict[str, str], port: int, key: str
    ) -> None:
        super().__init__(name, args, env)
        self.url = f"http://127.0.0.1:{port}"
        self.key = key

    def stats(self) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self.key}"}
        response = httpx.get(self.url + "/admin/stats", headers=headers, timeout=30)
        return response.json()  # type: ignore[no-any-return]


class Deployment:
    """An app on the distributed backends, as separate ``api`` and ``worker`` processes.

    Every process it started is killed by ``close``, whatever the test did.
    """

    def __init__(self, name: str, app: Path, data_dir: Path, env: dict[str, str]) -> None:
        self.name = name  # of its stream, and the root of its other backends' names
        self.app = app
        self.data_dir = data_dir
        self.env = child_env(env)
        self.procs: list[Proc] = []
        self.key = ""  # an admin key, made when the first API process starts

    API_READY = "listening on"
    WORKER_READY = "running its rules on bus"

    def api(self, wait: bool = True) -> Api:
        """Start ``rulebus api`` on a free port; ``wait`` until it listens."""
        port = free_port()
        n = sum(isinstance(p, Api) for p in self.procs) + 1
        args = ["api", str(self.app), "--data-dir", str(self.data_dir), "--port", str(port)]
        if not self.key:
            self.key = make_key(self.data_dir, self.env, scopes=("admin",))
        proc = Api(f"api-{n}", args, self.env, port, self.key)
        self.procs.append(proc)
        proc.start(self.API_READY if wait else None)
        return proc

    def worker(self, name: str | None = None, wait: bool = True) -> Proc:
        """Start ``rulebus worker``; ``wait`` until its engine runs."""
        n = sum(not isinstance(p, Api) for p in self.procs) + 1
        args = ["worker", str(self.app), "--data-dir", str(self.data_dir)]
        proc = Proc(name or f"worker-{n}", args, self.env)
        self.procs.append(proc)
        return proc.start(self.WORKER_READY if wait else None)

    def cli(self, *args: str) -> str:
        cmd = [sys.executable, "-m", "rulebus", *args, "--data-dir", str(self.data_dir)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=self.env)
        if result.returncode != 0:
            raise AssertionError(f"{cmd} exited {result.returncode}: {result.stderr}")
        return result.stdout

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive:
                assert proc.proc is not None
                proc.proc.kill()
                proc.proc.wait(10)

    def logs(self, lines: int | None = 150) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.tail(lines)}" for p in self.procs)


class Load:
    """Clients that send ``count`` events with ids of their own, each until a 2xx answer.

    Each attempt goes to one of ``urls`` at random, so the retry of a request
    that died with one API process may land on another. A connection error, a
    time-out or a 5xx is retried, as a client with idempotency keys would.
    """

    def __init__(self, urls: list[str], count: int, threads: int = 8, timeout: float = 15) -> None:
        self.urls = urls
        self.ids = [f"o-{n}" for n in range(count)]
        self.kind = {id_: "buy" if n % 2 == 0 else "sell" for n, id_ in enumerate(self.ids)}
        self.threads = threads
        self.timeout = timeout
        self.acked: dict[str, int] = {}  # id -> the status of its first 2xx answer
        self.fresh: collections.Counter[str] = collections.Counter()  # 202 answers per id
        self.problems: collections.Counter[str] = collections.Counter()  # what was retried
        self.unexpected: list[str] = []
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self.started = 0.0
        self.finished = 0.0

    def start(self) -> Load:
        self.started = time.monotonic()
        for t in range(self.threads):
            thread = threading.Thread(target=self._client, args=(self.ids[t :: self.threads],))
            thread.start()
            self._workers.append(thread)
        return self

    def _client(self, ids: list[str]) -> None:
        with httpx.Client(timeout=self.timeout) as http:
            for id_ in ids:
                n = int(id_.split("-")[1])
                body = {"type": self.kind[id_], "price": n, "id": id_}
                deadline = time.monotonic() + 90
                while True:
                    url = random.choice(self.urls)
                    try:
                        response = http.post(url + "/event", json=body)
                    except httpx.TransportError as exc:
                        self._retry(type(exc).__name__, 0.05)
                    else:
                        status = response.status_code
                        if 200 <= status < 300:
                            with self._lock:
                                self.acked.setdefault(id_, status)
                                if status == 202:
                                    self.fresh[id_] += 1
                            break
                        if status < 500:
                            with self._lock:
                                self.unexpected.append(f"{id_}: {status} {response.text}")
                            break
                        self._retry(str(status), 0.2)
                    if time.monotonic() > deadline:
                        with self._lock:
                            self.unexpected.append(f"{id_}: no 2xx answer in 90 s")
                        break

    def _retry(self, problem: str, pause: float) -> None:
        with self._lock:
            self.problems[problem] += 1
        time.sleep(pause)

    def wait_acked(self, count: int, timeout: float = 30) -> None:
        """Wait until ``count`` events were acknowledged."""
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.acked)} of {count} events acknowledged")
            if not any(t.is_alive() for t in self._workers):
                raise AssertionError(f"the clients ended with {len(self.acked)} acknowledged")
            time.sleep(0.01)

    def join(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(deadline - time.monotonic(), 0))
        assert not any(t.is_alive() for t in self._workers), "the clients did not finish"
        self.finished = time.monotonic()

    def summary(self) -> str:
        took = (self.finished or time.monotonic()) - self.started
        problems = dict(self.problems) or "none"
        return f"{len(self.acked)}/{len(self.ids)} acked in {took:.1f} s; retried: {problems}"


def wait_idle(api: Api, timeout: float = 90) -> dict[str, Any]:
    """Wait until every event was dispatched and no delivery waits for a retry."""
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            stats = api.stats()
        except (httpx.HTTPError, ValueError):
            stats = {}
        # An error answer (the API waiting on a paused store) has no counts: ask again.
        if "dispatched" in stats and stats["dispatched"] >= stats["head"] and not stats["retrying"]:
            return stats
        time.sleep(0.2)
    raise AssertionError(f"not idle after {timeout} s: {stats}")


def read_log(bus_url: str) -> list[tuple[str, str, Any]]:
    """(topic, id, payload) of every event in the NATS bus's log stream, read directly.

    A message of the stream is one envelope, or a JSON array of envelopes
    (see rulebus.backends.nats_bus).
    """
    return asyncio.run(_read_log(bus_url))


async def _read_log(bus_url: str) -> list[tuple[str, str, Any]]:
    import nats
    from nats.js import api

    parts = urlsplit(bus_url)
    stream = parse_qs(parts.query)["stream"][0]
    nc = await nats.connect(f"nats://{parts.netloc}", connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=10)
        total = (await js.stream_info(stream)).state.messages
        received: list[bytes] = []
        done = asyncio.Event()

        async def on_message(msg: Any) -> None:
            received.append(msg.data)
            if len(received) >= total:
                done.set()

        sub = await js.subscribe(
            f"{stream}.ev.*",
            stream=stream,
            ordered_consumer=True,
            config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL),
            cb=on_message,
        )
        if total:
            await asyncio.wait_for(done.wait(), 30)
        await sub.unsubscribe()
    finally:
        await nc.close()
    out = []
    for data in received:
        message = json.loads(data)
        for envelope in message if isinstance(message, list) else [message]:
            out.append((envelope["topic"], envelope["id"], envelope["payload"]))
    return out


def check_outcome(
    deployment: Deployment, api: Api, load: Load, receiver: Receiver
) -> dict[str, Any]:
    """Every acknowledged event went through the whole pipeline once; returns the figures.

    Checks: lost 0 (every acked id in table ``events``), no extra or duplicate
    rows, no event or alert stored twice in the log (read from the stream), no
    id answered 202 twice, no dead letter, and for every flagged
    buy its object in ``fraud-archive`` and at least one webhook delivery.
    """
    assert not load.unexpected, load.unexpected[:10]
    acked = set(load.acked)
    assert acked == set(load.ids), f"{len(set(load.ids) - acked)} events never acknowledged"
    began = time.monotonic()
    stats = wait_idle(api)
    flagged = {id_ for id_ in acked if load.kind[id_] == "buy" and is_fraud(id_)}
    figures: dict[str, Any] = {
        "idle_after": round(began - load.finished, 1) if load.finished else None,
        "drain_s": round(time.monotonic() - began, 1),
        "stats": stats,
        "acked": len(acked),
        "flagged": len(flagged),
    }
    problems: list[str] = []
    repeats: list[str] = []  # alerts stored twice in the log
    if stats["dead_letters"]:
        letters = deployment.cli("dlq", "ls").splitlines()
        problems.append(f"{stats['dead_letters']} dead letters, e.g. {letters[:3]}")

    # The two commands each start a Python process: run them at once.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        scanned = pool.submit(deployment.cli, "table", "scan", "events")
        listed = pool.submit(deployment.cli, "bucket", "ls", "fraud-archive")
        rows = [json.loads(line) for line in scanned.result().splitlines()]
        keys = set(listed.result().split())
    ids = [row["id"] for row in rows]
    stored = set(ids)
    lost = sorted(acked - stored)
    figures.update(rows=len(ids), lost=len(lost), duplicate_rows=len(ids) - len(stored))
    if lost:
        problems.append(f"{len(lost)} acknowledged events not in the table, e.g. {lost[:10]}")
    if stored - acked:
        problems.append(f"rows of events never acknowledged: {sorted(stored - acked)[:10]}")

    twice = sorted(id_ for id_, n in load.fresh.items() if n > 1)
    if twice:
        problems.append(f"{len(twice)} ids answered 202 (stored) more than once: {twice[:10]}")
    # The log holds each event once, and each alert that fraud-check published once.
    entries = read_log(deployment.env["RULEBUS_BUS"])
    events = collections.Counter(id_ for topic, id_, _ in entries if topic.startswith("event/"))
    alerts = collections.Counter(
        payload.get("id") for topic, _, payload in entries if topic == "alert/fraud"
    )
    figures.update(log_entries=len(entries), log_events=len(events), log_alerts=len(alerts))
    for what, counted, expected in (("events", events, acked), ("alerts", alerts, flagged)):
        repeated = sorted(id_ for id_, n in counted.items() if n > 1)
        if repeated:
            message = f"{len(repeated)} {what} stored twice in the log: {repeated[:10]}"
            if what == "alerts":
                # The alert's own (derived) ids: the same one each time, or not?
                own = collections.defaultdict(list)
                for topic, id_, payload in entries:
                    if topic == "alert/fraud" and payload.get("id") in repeated:
                        own[payload.get("id")].append(id_)
                message += f"; their event ids: {dict(list(own.items())[:5])}"
            (repeats if what == "alerts" else problems).append(message)
        if set(counted) != expected:
            absent = sorted(expected - set(counted))
            extra = sorted(set(counted) - expected)
            problems.append(f"{what} not in the log: {absent[:10]}; unexpected: {extra[:10]}")
    if len(entries) != len(acked) + len(flagged):
        extra = f"{len(entries)} entries in the log, not {len(acked) + len(flagged)}"
        distinct = len(events) + len(alerts)
        (repeats if distinct == len(acked) + len(flagged) else problems).append(extra)

    missing = sorted(flagged - {key.removesuffix(".json") for key in keys})
    figures["objects"] = len(keys)
    if missing:
        problems.append(f"{len(missing)} flagged buys not archived, e.g. {missing[:10]}")
    if keys - {f"{id_}.json" for id_ in flagged}:
        problems.append(f"unexpected objects: {sorted(keys)[:10]}")

    notified = [delivery.json()["id"] for delivery in receiver.received]
    unnotified = sorted(flagged - set(notified))
    figures.update(webhooks=len(notified), webhook_ids=len(set(notified)))
    if unnotified:
        problems.append(f"{len(unnotified)} flagged buys never notified: {unnotified[:10]}")
    if set(notified) - flagged:
        problems.append(f"notified but not flagged: {sorted(set(notified) - flagged)[:10]}")
    assert not problems, "\n".join([*problems, *repeats, f"figures: {figures}"])
    if repeats:
        raise AlertsStoredTwice("\n".join([*repeats, f"figures: {figures}"]))
    return figures


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP the process for the duration, and SIGCONT it whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
