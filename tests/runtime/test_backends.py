"""The embedded stores under concurrent use, through their Python interface."""

import asyncio
from pathlib import Path

from rulebus.backends.fs_objects import FileObjectStore
from rulebus.backends.sqlite_tables import SqliteTableStore


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
