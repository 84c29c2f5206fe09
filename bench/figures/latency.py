"""Figure 5: from ingest acknowledgement to table row committed, at a steady rate.

Method. The load generator (its own process) sends single-event ``POST /event`` on
a fixed schedule, open loop, each event with its own id, and records the wall-clock
time at which each 2xx answer arrived: the acknowledgement. Meanwhile a tail thread
here reads the table's new rows by ``rowid`` in a tight loop (read-only, every
millisecond) and stamps each id with the time it first saw it. A row is visible to
another connection only once its transaction has committed, so ``seen - acked`` is
the ack-to-commit latency, over-estimated by at most one poll (the poll period is
reported as the resolution). A row committed before the answer reached the client
counts as 0: it was already there when the client was told.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

from bench import load
from bench.deploy import Unavailable, receiver, rulebus_exchange
from bench.plan import Plan
from bench.report import Figure, median, percentile
from bench.signing import new_secret

TARGET_P99_MS = 25.0


class TableTail(threading.Thread):
    """Stamps each id that appears in ``table`` with the time it was first seen."""

    def __init__(self, path: Path, table: str, period: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.table = table
        self.period = period
        self.seen: dict[str, float] = {}
        self.polls = 0
        self.error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            self._tail()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def _tail(self) -> None:
        while not self.path.exists():
            if self._halt.wait(self.period):
                return
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        quoted = '"' + self.table.replace('"', '""') + '"'
        last = 0
        try:
            while not self._halt.is_set():
                try:
                    rows = conn.execute(
                        f'SELECT rowid, "id" FROM {quoted} WHERE rowid > ? ORDER BY rowid', (last,)
                    ).fetchall()
                except sqlite3.OperationalError as exc:
                    if "no such table" not in str(exc) and "locked" not in str(exc):
                        raise
                    rows = []
                now = time.time()
                self.polls += 1
                for rowid, event_id in rows:
                    self.seen.setdefault(str(event_id), now)
                    last = rowid
                self._halt.wait(self.period)
        finally:
            conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _read_acks(path: Path) -> dict[str, float]:
    acks: dict[str, float] = {}
    for line in path.read_text().splitlines():
        event_id, _sent, acked = line.split("\t")
        acks[event_id] = float(acked)
    return acks


def measure(plan: Plan) -> list[Figure]:
    s = plan.sizes
    rate = s.latency_rate
    n = int(rate * s.latency_seconds)
    title = f"5. ack → row at {rate:,.0f}/s"
    p50 = Figure("5_latency_p50", f"{title}, p50", unit="ms")
    p99 = Figure("5_latency_p99", f"{title}, p99", unit="ms", target=f"≤ {TARGET_P99_MS:.0f}")
    worst = Figure("5_latency_max", f"{title}, max", unit="ms")
    figures = [p50, p99, worst]
    per_run: list[dict[str, float]] = []
    workdir = plan.run_dir("latency")
    secret = new_secret()
    try:
        with receiver(workdir, secret) as hook, rulebus_exchange(workdir, hook, secret) as d:
            for i in range(s.runs):
                per_run.append(_one_run(d.table.path, workdir, d.single_url, n, rate, 500 + i))
    except (Unavailable, RuntimeError) as exc:
        for f in figures:
            f.error = str(exc)
        return figures
    p50.value = median([r["p50_ms"] for r in per_run])
    p99.value = median([r["p99_ms"] for r in per_run])
    worst.value = median([r["max_ms"] for r in per_run])
    p50.runs["runs"] = per_run
    p99.met = p99.value is not None and p99.value <= TARGET_P99_MS
    achieved = median([r["achieved_rate"] for r in per_run]) or 0.0
    if achieved < 0.95 * rate:
        p99.notes.append(f"did not keep up: {achieved:,.0f} events/s sent and acknowledged")
    p50.notes.append(
        f"resolution: one tail poll, {median([r['poll_ms'] for r in per_run]):.2f} ms median period"
    )
    return figures


def _one_run(db: Path, workdir: Path, url: str, n: int, rate: float, seed: int) -> dict[str, float]:
    acks_path = workdir / f"acks-{seed}.tsv"
    tail = TableTail(db, "events")
    tail.start()
    started = time.monotonic()
    try:
        sent = load.run_loadgen(
            [
                "rate",
                url,
                "--n",
                str(n),
                "--seed",
                str(seed),
                "--rate",
                str(rate),
                "--acks",
                str(acks_path),
            ],
            timeout=n / rate + 120,
        )
        acks = _read_acks(acks_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(k in tail.seen for k in acks):
            time.sleep(0.05)
    finally:
        tail.stop()
        elapsed = time.monotonic() - started
        with contextlib.suppress(OSError):
            acks_path.unlink()
    if tail.error:
        raise RuntimeError(f"table tail failed: {tail.error}")
    missing = [k for k in acks if k not in tail.seen]
    if missing:
        raise RuntimeError(f"{len(missing)} acknowledged events never reached the table")
    latencies = sorted(max(0.0, tail.seen[k] - t) * 1000 for k, t in acks.items())
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1],
        "acked": float(len(acks)),
        "achieved_rate": float(sent["achieved_rate"]),
        "late_sends": float(sent["late_sends"]),
        "poll_ms": elapsed / max(tail.polls, 1) * 1000,
    }
