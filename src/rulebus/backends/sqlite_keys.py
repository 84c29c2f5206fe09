"""API keys in ``keys.db`` beside the embedded event log."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from rulebus import codec
from rulebus.backends.sqlite_writer import connect, opened
from rulebus.errors import BadInput, NotFound
from rulebus.keys import ApiKey

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    lookup TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL,
    scopes TEXT NOT NULL,
    topics TEXT NOT NULL,
    rate REAL,
    burst INTEGER NOT NULL,
    created INTEGER NOT NULL,
    last_used INTEGER
)
"""
_COLUMNS = "name, lookup, digest, scopes, topics, rate, burst, created, last_used"


class SqliteKeyStore:
    """The :class:`~rulebus.backends.base.KeyStore` on one SQLite file.

    Keys change rarely and are read about once a second by each API process,
    so each call is a short statement on a thread, outside the group commit.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        opened("keys", self.path, self._open)

    def _open(self) -> None:
        self._conn = connect(self.path)
        self._conn.execute(_SCHEMA)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = self._conn
        assert conn is not None, "open() the key store first"
        return await asyncio.to_thread(lambda: conn.execute(sql, params).fetchall())

    async def create(self, key: ApiKey) -> None:
        try:
            await self._run(
                f"INSERT INTO keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.name,
                    key.lookup,
                    key.digest,
                    codec.dumps_str(list(key.scopes)),
                    codec.dumps_str(list(key.topics)),
                    key.rate,
                    key.burst,
                    key.created,
                    key.last_used,
                ),
            )
        except sqlite3.IntegrityError:
            raise BadInput(f"a key named {key.name!r} exists already", status=409) from None

    async def all(self) -> list[ApiKey]:
        rows = await self._run(f"SELECT {_COLUMNS} FROM keys ORDER BY name")
        return [
            ApiKey(
                name=name,
                lookup=lookup,
                digest=digest,
                scopes=tuple(codec.loads(scopes)),
                topics=tuple(codec.loads(topics)),
                rate=rate,
                burst=burst,
                created=created,
                last_used=last_used,
            )
            for name, lookup, digest, scopes, topics, rate, burst, created, last_used in rows
        ]

    async def revoke(self, name: str) -> None:
        if not await self._run("DELETE FROM keys WHERE name = ? RETURNING name", (name,)):
            raise NotFound(f"no key named {name!r}")

    async def touch(self, used: dict[str, int]) -> None:
        for name, ms in used.items():
            await self._run(
                "UPDATE keys SET last_used = max(coalesce(last_used, 0), ?) WHERE name = ?",
                (ms, name),
            )


def from_url(url: str, data_dir: Path, **options: Any) -> SqliteKeyStore:
    return SqliteKeyStore(data_dir / "keys.db")
