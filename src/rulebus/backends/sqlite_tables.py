"""The embedded table store: each table is an SQLite table keyed by its key fields."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from rulebus import codec
from rulebus.backends.base import key_values
from rulebus.backends.sqlite_writer import WRITER_CACHE_KIB, GroupCommitWriter, connect, opened
from rulebus.errors import ActionError, DiskFull, NotFound

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")


def _quote(name: str) -> str:
    # Names are validated at load time; quoting keeps reserved words usable.
    if not _NAME.match(name):
        raise ValueError(f"invalid table or field name {name!r}")
    return '"' + name + '"'


def _key_value(value: Any) -> Any:
    """Key columns hold scalars as they are and anything else as its JSON text."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return codec.dumps_str(value)


class SqliteTableStore:
    """The :class:`~rulebus.backends.base.TableStore` on one SQLite file.

    ``put`` goes through group commit, so the rows of concurrent deliveries
    share a transaction and an fsync.
    """

    def __init__(self, path: Path, *, cache_kib: int = WRITER_CACHE_KIB) -> None:
        self.path = path
        self._writer = GroupCommitWriter(
            path, name="tables-writer", cache_kib=cache_kib, what="table items"
        )
        self._reader: sqlite3.Connection | None = None
        self._keys: dict[str, tuple[str, ...]] = {}
        self._put_sql: dict[str, str] = {}

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        opened("tables", self.path, self._open)

    def _open(self) -> None:
        self._writer.start()
        self._reader = connect(self.path)
        self._load_existing()

    async def close(self) -> None:
        self._writer.stop()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _load_existing(self) -> None:
        assert self._reader is not None
        rows = self._reader.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        ).fetchall()
        for (name,) in rows:
            cols = self._reader.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
            key = tuple(c[1] for c in sorted(cols, key=lambda c: c[5]) if c[5] > 0)
            if key:
                self._register(name, key)

    def _register(self, name: str, key: tuple[str, ...]) -> None:
        self._keys[name] = key
        columns = ", ".join(_quote(k) for k in (*key, "item"))
        marks = ", ".join("?" * (len(key) + 1))
        self._put_sql[name] = f"INSERT OR REPLACE INTO {_quote(name)} ({columns}) VALUES ({marks})"

    async def create_table(self, name: str, key: Sequence[str]) -> None:
        key = tuple(key)
        existing = self._keys.get(name)
        if existing is not None:
            if existing != key:
                raise ActionError(
                    f"table {name!r} already exists with key {list(existing)}, not {list(key)}",
                    retryable=False,
                )
            return
        cols = ", ".join(f"{_quote(k)} NOT NULL" for k in key)
        pk = ", ".join(_quote(k) for k in key)
        sql = (
            f"CREATE TABLE IF NOT EXISTS {_quote(name)}"
            f" ({cols}, item BLOB NOT NULL, PRIMARY KEY ({pk}))"
        )
        await self._writer.submit(lambda conn: conn.execute(sql))
        self._register(name, key)

    def _row(self, table: str, item: dict[str, Any]) -> tuple[str, list[Any]]:
        try:
            key = self._keys[table]
        except KeyError:
            raise NotFound(f"no table named {table!r}") from None
        values = [_key_value(v) for v in key_values(table, key, item)]
        values.append(codec.dumps(item))
        return self._put_sql[table], values

    async def put(self, table: str, item: dict[str, Any]) -> None:
        sql, values = self._row(table, item)
        await self._write(table, lambda conn: conn.execute(sql, values))

    async def _write(self, table: str, work: Callable[[sqlite3.Connection], Any]) -> None:
        try:
            await self._writer.submit(work)
        except DiskFull as exc:
            # Retryable: the same rows fit once there is room again.
            raise ActionError(f"cannot write to table {table!r}: {exc.reason}") from None

    async def put_many(self, table: str, items: Sequence[dict[str, Any]]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        rows = []
        sql = ""
        for item in items:
            try:
                sql, values = self._row(table, item)
            except Exception as exc:
                errors.append(exc)
                continue
            errors.append(None)
            rows.append(values)
        if rows:
            try:
                await self._write(table, lambda conn: conn.executemany(sql, rows))
            except Exception as exc:
                errors = [exc if e is None else e for e in errors]
        return errors

    async def scan(self, table: str) -> AsyncIterator[dict[str, Any]]:
        if table not in self._keys:
            raise NotFound(f"no table named {table!r}")
        assert self._reader is not None
        order = ", ".join(_quote(k) for k in self._keys[table])
        cursor = self._reader.execute(f"SELECT item FROM {_quote(table)} ORDER BY {order}")
        while rows := cursor.fetchmany(500):
            for (item,) in rows:
                yield codec.loads(item)

    async def get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        if table not in self._keys:
            raise NotFound(f"no table named {table!r}")
        assert self._reader is not None
        fields = self._keys[table]
        where = " AND ".join(f"{_quote(k)} = ?" for k in fields)
        row = self._reader.execute(
            f"SELECT item FROM {_quote(table)} WHERE {where}",
            [_key_value(key[k]) for k in fields],
        ).fetchone()
        return None if row is None else codec.loads(row[0])

    async def count(self, table: str) -> int:
        if table not in self._keys:
            raise NotFound(f"no table named {table!r}")
        assert self._reader is not None
        (n,) = self._reader.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()
        return int(n)


def from_url(url: str, data_dir: Path, *, cache_kib: int = WRITER_CACHE_KIB) -> SqliteTableStore:
    """``sqlite``: the tables in ``data_dir/tables.sqlite3``."""
    return SqliteTableStore(data_dir / "tables.sqlite3", cache_kib=cache_kib)
