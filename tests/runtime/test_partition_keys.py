"""Deliveries with one partition key run in order, one at a time, in one engine process."""

from __future__ import annotations

import itertools
import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.runtime.helpers import Server, cli, scan, wait_until

APP = """
tables:
  audit:
    key: [sensor, n]
functions:
  track:
    handler: track:track
    concurrency: 64
rules:
  track-readings:
    sql: SELECT * FROM 'reading/+'
    partition_key: ${sensor}
    actions:
      - function: {name: track}
  audit:
    sql: SELECT * FROM 'audit/+'
    actions:
      - table: {name: audit}
api:
  routes:
    - path: /reading
      batch_path: /readings
      topic: reading/${sensor}
      required: [sensor, n]
"""

# What a user would write for a per-sensor rolling state: memory of the last
# reading per sensor. It reports whether each reading came after the last one
# this process saw, and whether another call for the sensor was in progress.
TRACK = """
import asyncio
import itertools
import os

last = {}
busy = set()


async def track(event, ctx):
    sensor, n = event["sensor"], event["n"]
    overlapping = sensor in busy
    busy.add(sensor)
    await asyncio.sleep(0.001)
    busy.discard(sensor)
    previous = last.get(sensor)
    last[sensor] = n
    ctx.publish(
        f"audit/{sensor}",
        {
            "sensor": sensor,
            "n": n,
            "in_order": previous is None or n > previous,
            "overlapping": overlapping,
            "pid": os.getpid(),
        },
    )
"""

SENSORS = [f"s{i}" for i in range(8)]
READINGS = 120  # per sensor


def make_app(tmp_path: Path) -> Path:
    app = tmp_path / "keyed"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(APP))
    (app / "track.py").write_text(textwrap.dedent(TRACK))
    return app


def send(server: Server, start: int, stop: int) -> None:
    for n in range(start, stop, 10):
        batch = [{"sensor": s, "n": m} for m in range(n, min(n + 10, stop)) for s in SENSORS]
        response = server.post("/readings", batch)
        assert response.status_code == 200, response.text


def audited(data_dir: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    return scan("audit", data_dir, env)


def check(rows: list[dict[str, Any]]) -> None:
    assert {(r["sensor"], r["n"]) for r in rows} == {
        (s, n) for s in SENSORS for n in range(READINGS)
    }
    assert [r for r in rows if not r["in_order"]] == []
    assert [r for r in rows if r["overlapping"]] == []


def test_readings_of_one_key_are_tracked_in_order_by_two_workers(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """With two engine processes, each sensor's readings reach one process at a time,
    in order, and both processes get work."""
    data = tmp_path / "data"
    server = Server(make_app(tmp_path), data, backends, "--workers", "2").start()
    wait_until(lambda: server.stats()["engines"] == 2, what="both engine processes at work")
    send(server, 0, READINGS)
    rows = wait_until(
        lambda: (r := audited(data, backends)) and len(r) == len(SENSORS) * READINGS and r,
        timeout=60,
        what="every reading audited",
    )
    check(rows)
    # A sensor stays with one process; on the NATS bus its slot may move once
    # while the second process joins and the slots are shared out.
    handovers = {
        sensor: sum(a["pid"] != b["pid"] for a, b in itertools.pairwise(seq))
        for sensor in SENSORS
        if (seq := sorted((r for r in rows if r["sensor"] == sensor), key=lambda r: r["n"]))
    }
    assert all(n <= 1 for n in handovers.values()), handovers
    assert len({r["pid"] for r in rows}) == 2, "both processes got work"
    server.stop()


def test_per_key_order_holds_through_a_worker_kill(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """Killing one engine process mid-stream loses nothing and breaks no key's order:
    its keys resume in order where it had committed."""
    data = tmp_path / "data"
    server = Server(make_app(tmp_path), data, backends, "--workers", "2").start()
    send(server, 0, READINGS // 3)
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    send(server, READINGS // 3, READINGS)
    rows = wait_until(
        lambda: (r := audited(data, backends)) and len(r) == len(SENSORS) * READINGS and r,
        timeout=90,
        what="every reading audited after the kill",
    )
    check(rows)
    assert victim not in server.worker_pids(), "the killed worker was restarted"
    stats = server.stats()
    assert stats["dead_letters"] == 0
    assert cli("dlq", "ls", data_dir=data, env=backends, check=True).stdout == ""
    time.sleep(0.1)
    server.stop()
