"""Retention on the embedded bus: does the file stop growing, and what does ingest pay?

Run alone: ``.venv/bin/python bench/retention.py [--events 300000]``.

- **size**: a steady stream of events of about 450 bytes, appended, dispatched
  and compacted in rounds of 1,000 with ``max_size: 10MB``, once with
  time-ordered ids (what the API makes) and once with random ones (what clients
  may send); prints the file's size every 50,000 events.
- **latency**: 500,000 dispatched events removed by age while single events
  are appended one after another; prints the removal rate and the append
  latency before and during the compaction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rulebus.backends.base import Bus
from rulebus.backends.registry import open_store
from rulebus.backends.sqlite_bus import COMPACT_CHUNK
from rulebus.events import Event, new_id
from rulebus.template.model import RetentionSpec


async def dispatch_all(bus: Bus, n: int) -> None:
    got = 0
    while got < n:
        events = await bus.read(10_000)
        got += len(events)
        await bus.commit(events, [])


async def size(events: int, ids: str) -> None:
    folder = Path(tempfile.mkdtemp())
    bus = open_store("bus", "sqlite", folder, engine=True)
    await bus.open()
    await bus.start([])
    retention = RetentionSpec(max_size=10_000_000, duplicate_window=0.001)
    path = folder / "bus.sqlite3"
    for n in range(1, events // 1000 + 1):
        made = [new_id() if ids == "time-ordered" else str(uuid.uuid4()) for _ in range(1000)]
        await bus.append([Event(i, "t/a", 1, {"pad": "x" * 400}) for i in made])
        await dispatch_all(bus, 1000)
        await bus.compact(retention)
        if n % 50 == 0:
            with contextlib.closing(sqlite3.connect(path)) as db:
                (pages,) = db.execute("PRAGMA page_count").fetchone()
            print(f"  {ids} ids, {n * 1000:>7} events: file {pages * 4096 / 1e6:.2f} MB")
    await bus.close()


async def latency() -> None:
    bus = open_store("bus", "sqlite", Path(tempfile.mkdtemp()), engine=True)
    await bus.open()
    await bus.start([])
    for _ in range(500):
        await bus.append([Event(new_id(), "t/a", 1, {"pad": "x" * 200}) for _ in range(1000)])
    await dispatch_all(bus, 500_000)
    retention = RetentionSpec(max_age=0.5, duplicate_window=0.5)
    await bus.compact(retention)  # notes the head: all of it is old in half a second
    await asyncio.sleep(0.6)
    waits: list[float] = []
    stop = asyncio.Event()

    async def append_one_by_one() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await bus.append([Event(new_id(), "t/a", 1, {"pad": "y"})])
            waits.append(time.perf_counter() - started)

    appender = asyncio.create_task(append_one_by_one())
    await asyncio.sleep(0.3)
    before = sorted(waits)
    waits.clear()
    started = time.perf_counter()
    removed = await bus.compact(retention)
    took = time.perf_counter() - started
    stop.set()
    await appender
    during = sorted(waits)
    await bus.close()
    chunk = took / (removed / COMPACT_CHUNK) * 1000
    print(f"  removed {removed} events in {took:.2f} s ({chunk:.1f} ms per {COMPACT_CHUNK})")
    for name, sample in (("before", before), ("during", during)):
        p50, p99 = (sample[int(len(sample) * q)] * 1000 for q in (0.5, 0.99))
        print(f"  single appends {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()
    print("size (max_size 10 MB):")
    for ids in ("time-ordered", "random"):
        await size(args.events, ids)
    print("latency:")
    await latency()


if __name__ == "__main__":
    asyncio.run(main())
