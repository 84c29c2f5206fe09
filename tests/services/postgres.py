"""The machine's PostgreSQL (127.0.0.1:5432, trust auth, database ``test``).

Each test gets a schema of its own, dropped afterwards, so tests never see
each other's tables.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from tests.services import unavailable

SERVER = "127.0.0.1:5432"
DATABASE = "test"
USERS = ("root", "postgres")


async def execute(url: str, sql: str) -> None:
    """Run one statement on a connection of its own."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the test database, as the first user it lets in."""
    try:
        import asyncpg  # noqa: F401
    except ImportError as exc:
        unavailable("PostgreSQL", f"asyncpg is not installed ({exc})")
    reasons = []
    for user in USERS:
        url = f"postgresql://{user}@{SERVER}/{DATABASE}"
        try:
            asyncio.run(execute(url, "SELECT 1"))
        except Exception as exc:
            reasons.append(f"{user}: {exc}")
        else:
            return url
    unavailable("PostgreSQL", "; ".join(reasons))


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL of the test database with a fresh schema, dropped after the test."""
    schema = f"t_{secrets.token_hex(6)}"
    yield f"{postgres_server}?schema={schema}"
    asyncio.run(execute(postgres_server, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
