"""The embedded stores under concurrent use, through their Python interface."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from rulebus.backends.base import Appended
from rulebus.backends.fs_objects import FileObjectStore
from rulebus.backends.sqlite_bus import Partition, SqliteBus
from rulebus.backends.sqlite_tables import SqliteTableStore
from rulebus.events import Event


def test_concurrent_batches_share_commits_without_errors(tmp_path: Path) -> None:
    """Many put_many calls at once all succeed (group commit hands back no SQLite cursor)."""

    async def main() -> None:
        tables = SqliteTableStore(tmp_path / "tables.sqlite3")
        await tables.open()
        await tables.create_table("events", ["id"])

        async def batch(n: int) -> list[Exception | None]:
            items = [{"id": f"{n}-{i}", "n": n} for i in range(300)]
            return await tables.put_many("events", items)

        for _ in range(20):
            results = await asyncio.gather(*(batch(n) for n in range(8)))
            assert [e for r in results for e in r if e is not None] == []
        assert await tables.count("events") == 2400
        # The same keys again replace rows rather than add them.
        await asyncio.gather(*(batch(n) for n in range(8)))
        assert await tables.count("events") == 2400
        await tables.close()

    asyncio.run(main())


def test_concurrent_puts_of_one_key_leave_one_whole_object(tmp_path: Path) -> None:
    """Writer threads racing on a key never tear it: the object is one of the bodies."""

    async def main() -> None:
        objects = FileObjectStore(tmp_path / "buckets")
        await objects.open()
        await objects.create_bucket("bkt")
        bodies = [bytes([65 + i]) * 100_000 for i in range(16)]
        results = await objects.put_many("bkt", [("same/key.json", b) for b in bodies])
        assert results == [None] * 16
        assert await objects.get("bkt", "same/key.json") in bodies
        assert [key async for key in objects.list("bkt")] == ["same/key.json"]
        await objects.close()

    asyncio.run(main())


def test_a_put_replaces_an_object_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    """Writing a key again replaces its body; the bucket holds only whole objects."""

    async def main() -> None:
        objects = FileObjectStore(tmp_path / "buckets")
        await objects.open()
        await objects.create_bucket("bkt")
        assert await objects.put_many("bkt", [("a.json", b"1"), ("d/b.json", b"2")]) == [None] * 2
        await objects.put("bkt", "a.json", b"replaced")
        await objects.flush()
        assert await objects.get("bkt", "a.json") == b"replaced"
        assert await objects.get("bkt", "d/b.json") == b"2"
        files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
        assert files == ["buckets/bkt/a.json", "buckets/bkt/d/b.json"]
        # Writing into new folders leaves no file open behind.
        open_before = len(os.listdir("/proc/self/fd"))
        keys = [(f"new-{i}/x.json", b"x") for i in range(20)]
        assert await objects.put_many("bkt", keys) == [None] * 20
        assert len(os.listdir("/proc/self/fd")) <= open_before
        await objects.close()

    asyncio.run(main())


def test_concurrent_appends_get_distinct_positions_and_repeats_are_duplicates(
    tmp_path: Path,
) -> None:
    """Appends that share a commit each get their own position, in order; an id
    already in the log, or repeated in the same commit, is a duplicate of the first."""

    async def main() -> None:
        bus = SqliteBus(tmp_path / "bus.sqlite3")
        await bus.open()
        await bus.start([])
        (old,) = await bus.append([Event("old", "t/a", 1, {"n": 0})])
        assert [e.id for e in await bus.read(10)] == ["old"]

        async def one(n: int) -> list[Appended]:
            ids = [f"e{n}-{i}" for i in range(5)] + ["old", f"e{n}-0", "shared"]
            return await bus.append([Event(id_, "t/a", 1, {"id": id_}) for id_ in ids])

        results = await asyncio.gather(*(one(n) for n in range(40)))
        new = [a for r in results for a in r if not a.duplicate]
        assert len(new) == 40 * 5 + 1  # each call's five, and "shared" once
        assert sorted(a.seq for a in new) == list(range(old.seq + 1, old.seq + len(new) + 1))
        by_id = {a.id: a.seq for a in new}
        for r in results:
            assert [a.duplicate for a in r[:5]] == [False] * 5
            assert r[5] == Appended("old", old.seq, duplicate=True)
            assert r[6] == Appended(r[0].id, r[0].seq, duplicate=True)
            assert r[7].seq == by_id["shared"]
        # What the log holds at each position is what was appended there.
        stored = await bus.read(1000)
        assert {e.id: e.seq for e in stored} == by_id
        await bus.close()

    asyncio.run(main())


def test_two_processes_appending_to_one_bus_lose_nothing(tmp_path: Path) -> None:
    """Writers in different processes take turns on the bus; every append is kept."""
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from rulebus.backends.sqlite_bus import SqliteBus\n"
        "from rulebus.events import Event\n"
        "async def main():\n"
        "    bus = SqliteBus(Path(sys.argv[1]), dispatching=False)\n"
        "    await bus.open()\n"
        "    for b in range(50):\n"
        "        await asyncio.gather(*(bus.append([Event(f'{sys.argv[2]}-{b}-{i}', 't', 1, {})])"
        " for i in range(20)))\n"
        "    await bus.close()\n"
        "asyncio.run(main())\n"
    )
    path = tmp_path / "bus.sqlite3"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]

    async def count() -> list[Event]:
        bus = SqliteBus(path)
        await bus.open()
        await bus.start([])
        events = await bus.read(5000)
        await bus.close()
        return events

    events = asyncio.run(count())
    assert len({e.id for e in events}) == len(events) == 2 * 50 * 20


def test_partitions_share_the_log_and_resume_safely_when_their_number_changes(
    tmp_path: Path,
) -> None:
    """Two partitions read disjoint halves of the log that together are all of it.
    With a new number of partitions, each resumes after the last event that every
    old partition had dispatched."""

    async def main() -> None:
        path = tmp_path / "bus.sqlite3"
        halves = [SqliteBus(path, partition=Partition(i, 2)) for i in range(2)]
        for bus in halves:
            await bus.open()
        await halves[0].append([Event(f"e{i}", "t", 1, {}) for i in range(10)])
        for bus in halves:
            await bus.start([])
        read = [await bus.read(100) for bus in halves]
        assert [e.seq for e in read[0]] == [2, 4, 6, 8, 10]
        assert [e.seq for e in read[1]] == [1, 3, 5, 7, 9]
        await halves[0].commit(read[0], [])  # all of partition 0
        await halves[1].commit(read[1][:3], [])  # partition 1 up to 5: 7 and 9 are not done
        assert (await halves[0].stats()).dispatched == 6
        for bus in halves:
            await bus.close()

        whole = SqliteBus(path)
        await whole.open()
        await whole.start([])
        assert [e.seq for e in await whole.read(100)] == [7, 8, 9, 10]
        await whole.close()

    asyncio.run(main())


def test_a_log_from_before_partitions_resumes_where_it_stopped(tmp_path: Path) -> None:
    """A data directory written before partitions keeps its dispatch position."""
    import sqlite3

    from rulebus.backends.sqlite_bus import SCHEMA

    path = tmp_path / "bus.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        SCHEMA + "CREATE TABLE dispatch (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER);"
    )
    conn.executemany(
        "INSERT INTO events (id, topic, ts, payload) VALUES (?, 't', 1, '{}')",
        [(f"e{i}",) for i in range(7)],
    )
    conn.execute("INSERT INTO dispatch (one, seq) VALUES (1, 5)")
    conn.commit()
    conn.close()

    async def main() -> None:
        bus = SqliteBus(path)
        await bus.open()
        await bus.start([])
        assert [e.id for e in await bus.read(100)] == ["e5", "e6"]
        await bus.close()

    asyncio.run(main())
