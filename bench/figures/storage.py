"""Figure 7: the storage ceiling, raw batched SQLite inserts of the same rows.

The rows have the shape rulebus's table store writes (the key column ``id`` and the
event as compact JSON in ``item``), into a fresh file on the same disk as the
pipeline's data, in WAL mode with ``synchronous=FULL``, ``executemany`` in one
transaction per batch of the pipeline's batch size. Nothing else happens: no HTTP,
no bus, no rules. Figure: the pipeline's events/s (figure 2) ÷ these rows/s.
"""

from __future__ import annotations

import json
import sqlite3
import time

from bench.events import make_events
from bench.plan import Plan
from bench.report import Figure, median, ratio

SCHEMA = 'CREATE TABLE "events" ("id" NOT NULL, item BLOB NOT NULL, PRIMARY KEY ("id"))'
INSERT = 'INSERT OR REPLACE INTO "events" ("id", item) VALUES (?, ?)'


def insert_rate(plan: Plan, n: int, seed: int) -> float:
    """Rows per second for ``n`` rows in transactions of ``batch_size``; a fresh file."""
    rows = [
        (str(e["id"]), json.dumps(e, separators=(",", ":")).encode()) for e in make_events(n, seed)
    ]
    path = plan.run_dir("storage") / f"ceiling-{seed}.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(SCHEMA)
        size = plan.sizes.batch_size
        start = time.perf_counter()
        for i in range(0, n, size):
            conn.execute("BEGIN")
            conn.executemany(INSERT, rows[i : i + size])
            conn.execute("COMMIT")
        return n / (time.perf_counter() - start)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def measure(plan: Plan) -> Figure:
    n = plan.sizes.storage_n
    fig = Figure(
        "7_storage",
        "7. pipeline ÷ raw SQLite inserts",
        unit="events/s",
        baseline_name=f"raw inserts, {n:,} rows",
        target="report it",
    )
    rates = [insert_rate(plan, n, seed=700 + i) for i in range(plan.sizes.runs)]
    fig.runs["ceiling_rows_per_s"] = rates
    fig.baseline = median(rates)
    fig.value = plan.pipeline_events_per_s
    fig.ratio = ratio(fig.value, fig.baseline)
    if fig.value is None:
        fig.notes.append("no pipeline figure in this run (run with --only pipeline,storage)")
    return fig
