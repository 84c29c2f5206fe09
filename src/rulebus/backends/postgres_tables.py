"""The PostgreSQL table store: each table is a PostgreSQL table keyed by its key fields.

Key columns are ``jsonb``, so a key keeps its JSON type ("1" and 1 are
different keys, 1 and 1.0 the same one, as in the SQLite store). The item is
kept as ``json``, which stores orjson's text as it is: ``jsonb`` would reorder
object keys and turn floats such as 1e300 into integers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from rulebus import codec
from rulebus.backends.base import key_values
from rulebus.backends.registry import redact
from rulebus.backends.sqlite_tables import _quote
from rulebus.errors import ActionError, NotFound, Unavailable

CONNECT_TIMEOUT = 5.0
POOL_SIZE = 4
APPLICATION_NAME = "rulebus"

# The key columns of each table with an item column, in primary-key order.
_KEYS_SQL = """
SELECT c.relname, array_agg(a.attname::text ORDER BY k.ord)
FROM pg_constraint p
JOIN pg_class c ON c.oid = p.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE p.contype = 'p' AND n.nspname = $1 AND ($2::text IS NULL OR c.relname = $2)
  AND EXISTS (SELECT 1 FROM pg_attribute i WHERE i.attrelid = c.oid AND i.attname = 'item')
GROUP BY c.relname
"""

# Lets engine processes that start together create schema and tables one at a time.
_DDL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('rulebus.tables'))"


def _key_text(value: Any) -> str:
    text = codec.dumps_str(value)
    if "\\u0000" in text:
        # jsonb cannot hold NUL, and the whole batch would fail on it.
        raise ActionError("key values cannot contain the NUL character", retryable=False)
    return text


def _order(column: str) -> str:
    """Sort like SQLite: numbers by value first, then everything else by code point."""
    return (
        f"jsonb_typeof({column}) <> 'number',"
        f" CASE WHEN jsonb_typeof({column}) = 'number' THEN {column}::numeric END,"
        f" {column} #>> '{{}}' COLLATE \"C\""
    )


def _batch_error(table: str, exc: Exception) -> ActionError:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    # Data and integrity errors come from the items; anything else (a lost
    # connection, a restart, a deadlock) may pass.
    retryable = not sqlstate.startswith(("22", "23"))
    return ActionError(f"table {table!r}: {type(exc).__name__}: {exc}", retryable=retryable)


class PostgresTableStore:
    """The :class:`~rulebus.backends.base.TableStore` in one schema of a PostgreSQL database."""

    def __init__(self, dsn: str, schema: str, *, url: str) -> None:
        self.schema = schema
        self._dsn = dsn
        self._url = url
        self._pool: asyncpg.Pool | None = None
        self._keys: dict[str, tuple[str, ...]] = {}
        self._put_sql: dict[str, str] = {}

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=POOL_SIZE, timeout=CONNECT_TIMEOUT
            )
            await self._load_existing()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            reason = str(exc) or type(exc).__name__
            raise Unavailable("tables", redact(self._url), reason) from None

    async def _load_existing(self) -> None:
        async with self._pool_or_fail().acquire() as conn, conn.transaction():
            await conn.execute(_DDL_LOCK)
            # CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the
            # database even when the schema exists, which many users lack.
            if not await conn.fetchval(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema
            ):
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(self.schema)}")
            for name, key in await conn.fetch(_KEYS_SQL, self.schema, None):
                self._register(name, tuple(key))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _pool_or_fail(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the table store is not open")
        return self._pool

    def _table(self, name: str) -> str:
        return f"{_quote(self.schema)}.{_quote(name)}"

    def _register(self, name: str, key: tuple[str, ...]) -> None:
        self._keys[name] = key
        # Positional aliases keep user field names out of everything but the target list.
        aliases = [f"k{i}" for i in range(len(key))]
        arrays = ", ".join(f"${i + 1}::text[]" for i in range(len(key) + 1))
        casts = ", ".join(f"{a}::jsonb AS {a}" for a in aliases)
        columns = ", ".join(_quote(k) for k in key)
        picked = ", ".join(aliases)
        # One statement per batch; DISTINCT ON keeps each key's last item, since
        # ON CONFLICT cannot update one row twice, and uses PostgreSQL's own key equality.
        self._put_sql[name] = (
            f"INSERT INTO {self._table(name)} ({columns}, item)"
            f" SELECT DISTINCT ON ({picked}) {picked}, item FROM ("
            f"SELECT {casts}, item::json AS item, n"
            f" FROM unnest({arrays}) WITH ORDINALITY AS batch({picked}, item, n)"
            f") AS rows ORDER BY {picked}, n DESC"
            f" ON CONFLICT ({columns}) DO UPDATE SET item = EXCLUDED.item"
        )

    def _key_of(self, table: str) -> tuple[str, ...]:
        try:
            return self._keys[table]
        except KeyError:
            raise NotFound(f"no table named {table!r}") from None

    async def create_table(self, name: str, key: Sequence[str]) -> None:
        key = tuple(key)
        columns = ", ".join(f"{_quote(k)} jsonb NOT NULL" for k in key)
        pk = ", ".join(_quote(k) for k in key)
        async with self._pool_or_fail().acquire() as conn, conn.transaction():
            await conn.execute(_DDL_LOCK)
            # Another engine process may have created it since open().
            rows = await conn.fetch(_KEYS_SQL, self.schema, name)
            existing = tuple(rows[0][1]) if rows else None
            if existing is not None and existing != key:
                raise ActionError(
                    f"table {name!r} already exists with key {list(existing)}, not {list(key)}",
                    retryable=False,
                )
            if existing is None:
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table(name)}"
                    f" ({columns}, item json NOT NULL, PRIMARY KEY ({pk}))"
                )
        self._register(name, key)

    def _row(self, table: str, item: dict[str, Any]) -> list[str]:
        values = [_key_text(v) for v in key_values(table, self._key_of(table), item)]
        values.append(codec.dumps_str(item))
        return values

    async def put(self, table: str, item: dict[str, Any]) -> None:
        (error,) = await self.put_many(table, [item])
        if error is not None:
            raise error

    async def put_many(self, table: str, items: Sequence[dict[str, Any]]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        rows = []
        for item in items:
            try:
                rows.append(self._row(table, item))
            except Exception as exc:
                errors.append(exc)
                continue
            errors.append(None)
        if rows:
            columns = [list(column) for column in zip(*rows, strict=True)]
            try:
                await self._pool_or_fail().execute(self._put_sql[table], *columns)
            except Exception as exc:
                failed = _batch_error(table, exc)
                errors = [failed if e is None else e for e in errors]
        return errors

    async def scan(self, table: str) -> AsyncIterator[dict[str, Any]]:
        key = self._key_of(table)
        order = ", ".join(_order(_quote(k)) for k in key)
        sql = f"SELECT item::text FROM {self._table(table)} ORDER BY {order}"
        async with self._pool_or_fail().acquire() as conn, conn.transaction():
            async for (item,) in conn.cursor(sql, prefetch=500):
                yield codec.loads(item)

    async def get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        fields = self._key_of(table)
        where = " AND ".join(f"{_quote(k)} = ${i + 1}::text::jsonb" for i, k in enumerate(fields))
        item = await self._pool_or_fail().fetchval(
            f"SELECT item::text FROM {self._table(table)} WHERE {where}",
            *(codec.dumps_str(key[k]) for k in fields),
        )
        return None if item is None else codec.loads(item)

    async def count(self, table: str) -> int:
        self._key_of(table)
        n = await self._pool_or_fail().fetchval(f"SELECT count(*) FROM {self._table(table)}")
        return int(n)


def from_url(url: str, data_dir: Path, **options: Any) -> PostgresTableStore:
    """``postgresql://user:pass@host:port/db?schema=NAME``: the tables in schema NAME.

    ``schema`` defaults to ``public``; the other query options (``sslmode``,
    ``application_name``...) go to the server as libpq would take them.
    ``data_dir`` and ``options`` (the embedded stores' tuning) are not used.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    schema = query.pop("schema", "public")
    try:
        _quote(schema)
    except ValueError as exc:
        raise Unavailable("tables", redact(url), str(exc)) from None
    # Names the store's connections, so an operator can tell them apart.
    query.setdefault("application_name", APPLICATION_NAME)
    dsn = urlunsplit(parts._replace(query=urlencode(query)))
    return PostgresTableStore(dsn, schema, url=url)
