"""The TableStore contract, held by every table backend alike."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rulebus import codec
from rulebus.backends.registry import open_store
from rulebus.errors import ActionError, NotFound, Unavailable

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
Store = Any  # a TableStore with count(), whichever backend


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    """Runs coroutines on one event loop for the whole test, which the stores' connections need."""
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def open_table_store(
    store_url: str, tmp_path: Path, run: Run[Any]
) -> Iterator[Callable[[], Store]]:
    """Opens stores of the backend under test; they are all closed after the test."""
    stores: list[Store] = []

    def open_one() -> Store:
        store = open_store("tables", store_url, tmp_path, cache_kib=1024)
        run(store.open())
        stores.append(store)
        return store

    yield open_one
    for store in stores:
        run(store.close())


@pytest.fixture
def table_store(open_table_store: Callable[[], Store]) -> Store:
    return open_table_store()


def test_put_then_get(table_store: Store, run: Run[Any]) -> None:
    """An item put is what get returns for its key."""

    async def main() -> None:
        await table_store.create_table("devices", ["id"])
        await table_store.put("devices", {"id": "d1", "temp": 21.5})
        assert await table_store.get("devices", {"id": "d1"}) == {"id": "d1", "temp": 21.5}

    run(main())


def test_put_replaces_the_item_with_the_same_key(table_store: Store, run: Run[Any]) -> None:
    """A second put of a key replaces the whole item rather than adding or merging."""

    async def main() -> None:
        await table_store.create_table("devices", ["id"])
        await table_store.put("devices", {"id": "d1", "a": 1})
        await table_store.put("devices", {"id": "d1", "b": 2})
        assert await table_store.get("devices", {"id": "d1"}) == {"id": "d1", "b": 2}
        assert await table_store.count("devices") == 1

    run(main())


def test_put_many_reports_each_item(table_store: Store, run: Run[Any]) -> None:
    """An item without its key field fails alone, not retryably; the others are written."""

    async def main() -> None:
        await table_store.create_table("devices", ["id"])
        errors = await table_store.put_many(
            "devices", [{"id": "a"}, {"temp": 1}, {"id": None}, {"id": "b"}]
        )
        assert errors[0] is None and errors[3] is None
        for error in errors[1:3]:
            assert isinstance(error, ActionError) and not error.retryable
        assert [item async for item in table_store.scan("devices")] == [{"id": "a"}, {"id": "b"}]

    run(main())


def test_composite_keys(table_store: Store, run: Run[Any]) -> None:
    """Items are keyed by all key fields together, and a key lacking one field fails."""

    async def main() -> None:
        await table_store.create_table("readings", ["device", "ts"])
        await table_store.put_many(
            "readings",
            [{"device": "d1", "ts": 1, "v": "a"}, {"device": "d1", "ts": 2, "v": "b"}],
        )
        await table_store.put("readings", {"device": "d2", "ts": 1, "v": "c"})
        assert await table_store.get("readings", {"device": "d1", "ts": 2}) == {
            "device": "d1",
            "ts": 2,
            "v": "b",
        }
        assert await table_store.count("readings") == 3
        with pytest.raises(ActionError) as caught:
            await table_store.put("readings", {"device": "d1", "v": "no ts"})
        assert not caught.value.retryable

    run(main())


def test_numbers_as_keys(table_store: Store, run: Run[Any]) -> None:
    """Number keys compare as numbers (1 and 1.0 are one key) and differ from strings."""

    async def main() -> None:
        await table_store.create_table("counters", ["n"])
        await table_store.put_many(
            "counters", [{"n": 1, "v": "int"}, {"n": "1", "v": "str"}, {"n": -2.5, "v": "f"}]
        )
        await table_store.put("counters", {"n": 1.0, "v": "float"})
        assert await table_store.get("counters", {"n": 1}) == {"n": 1.0, "v": "float"}
        assert await table_store.get("counters", {"n": "1"}) == {"n": "1", "v": "str"}
        assert await table_store.get("counters", {"n": -2.5}) == {"n": -2.5, "v": "f"}
        assert await table_store.get("counters", {"n": 2**63 - 1}) is None
        assert await table_store.count("counters") == 3

    run(main())


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
keys = (
    st.text(min_size=1).filter(lambda s: "\x00" not in s)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=keys, value=json_values, extra=st.dictionaries(st.text(max_size=8), json_values))
@example(
    key=2**63 - 1,
    value={
        "z": -0.0,
        "big": 1e300,
        "tiny": 5e-324,
        "u64": 2**63,
        "nul": "\x00",
        "ok": [True, None],
    },
    extra={"é🎉": "\u2028", "a": {"b": {"c": []}}},
)
def test_items_round_trip_exactly(
    table_store: Store, run: Run[Any], key: Any, value: Any, extra: dict[str, Any]
) -> None:
    """An item comes back from get and scan with the very JSON encoding it was put with."""
    item = {**extra, "id": key, "value": value}

    async def main() -> None:
        await table_store.create_table("awkward", ["id"])
        await table_store.put("awkward", item)
        got = await table_store.get("awkward", {"id": key})
        assert codec.dumps(got) == codec.dumps(item)
        scanned = [i async for i in table_store.scan("awkward") if i["id"] == key]
        assert [codec.dumps(i) for i in scanned] == [codec.dumps(item)]

    run(main())


def test_scan_yields_items_in_key_order(table_store: Store, run: Run[Any]) -> None:
    """Scan goes numbers first by value, then strings by code point, key field by key field."""
    ids: list[Any] = ["b", "a", "B", "é", "10", "9", 10, 9, -1.5, 2**40]

    async def main() -> None:
        await table_store.create_table("things", ["id", "part"])
        await table_store.put_many("things", [{"id": i, "part": p} for i in ids for p in (2, 1)])
        order = [(item["id"], item["part"]) async for item in table_store.scan("things")]
        expected = [-1.5, 9, 10, 2**40, "10", "9", "B", "a", "b", "é"]
        assert order == [(i, p) for i in expected for p in (1, 2)]

    run(main())


def test_get_of_a_missing_key_is_none(table_store: Store, run: Run[Any]) -> None:
    """Get of a key nobody put returns None."""

    async def main() -> None:
        await table_store.create_table("devices", ["id"])
        await table_store.put("devices", {"id": "d1"})
        assert await table_store.get("devices", {"id": "d2"}) is None

    run(main())


def test_unknown_table_is_not_found(table_store: Store, run: Run[Any]) -> None:
    """Every operation on a table that was never created raises or returns NotFound."""

    async def main() -> None:
        with pytest.raises(NotFound):
            await table_store.put("nope", {"id": 1})
        (error,) = await table_store.put_many("nope", [{"id": 1}])
        assert isinstance(error, NotFound)
        with pytest.raises(NotFound):
            await table_store.get("nope", {"id": 1})
        with pytest.raises(NotFound):
            [item async for item in table_store.scan("nope")]
        with pytest.raises(NotFound):
            await table_store.count("nope")

    run(main())


def test_concurrent_put_many_calls_all_succeed(table_store: Store, run: Run[Any]) -> None:
    """Many batches written at once all succeed and each item lands once."""

    async def main() -> None:
        await table_store.create_table("events", ["id"])

        async def batch(n: int) -> list[Exception | None]:
            items = [{"id": f"{n}-{i}", "n": n} for i in range(100)]
            errors: list[Exception | None] = await table_store.put_many("events", items)
            return errors

        for _ in range(2):  # the second round replaces the first
            results = await asyncio.gather(*(batch(n) for n in range(12)))
            assert [e for r in results for e in r if e is not None] == []
        assert await table_store.count("events") == 1200

    run(main())


def test_same_key_twice_in_one_batch_keeps_the_last(table_store: Store, run: Run[Any]) -> None:
    """Within one batch, a later item replaces an earlier one with the same key."""

    async def main() -> None:
        await table_store.create_table("devices", ["id"])
        errors = await table_store.put_many(
            "devices", [{"id": "d", "v": 1}, {"id": "e", "v": 1}, {"id": "d", "v": 2}]
        )
        assert errors == [None, None, None]
        assert await table_store.get("devices", {"id": "d"}) == {"id": "d", "v": 2}
        assert await table_store.count("devices") == 2

    run(main())


def test_a_reopened_store_sees_earlier_writes(
    open_table_store: Callable[[], Store], run: Run[Any]
) -> None:
    """A new store on the same place finds the tables and items of one closed before it."""
    first = open_table_store()

    async def write() -> None:
        await first.create_table("devices", ["id"])
        await first.put("devices", {"id": "d1", "v": 1})
        await first.close()

    run(write())
    second = open_table_store()

    async def read() -> None:
        assert await second.get("devices", {"id": "d1"}) == {"id": "d1", "v": 1}
        await second.create_table("devices", ["id"])
        with pytest.raises(ActionError):
            await second.create_table("devices", ["name"])

    run(read())


# -- PostgreSQL only ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://root:s3cret@127.0.0.1:1/test",
        "postgres://nobody_here:s3cret@127.0.0.1:5432/test",
    ],
    ids=["closed-port", "unknown-user"],
)
def test_postgres_that_cannot_be_used_is_unavailable(
    postgres_server: str, tmp_path: Path, url: str
) -> None:
    """Opening fails at once with Unavailable naming the URL without its password."""
    store = open_store("tables", url, tmp_path)
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        asyncio.run(store.open())
    assert time.monotonic() - started < 10
    assert "s3cret" not in str(caught.value)
    assert ":***@127.0.0.1:" in str(caught.value)


def test_postgres_writes_survive_terminated_connections(
    postgres_server: str, postgres_url: str, tmp_path: Path, run: Run[Any]
) -> None:
    """After the server kills the store's connections, writes fail retryably, then succeed again."""
    import asyncpg

    name = f"rulebus-test-{secrets.token_hex(4)}"
    store = open_store("tables", f"{postgres_url}&application_name={name}", tmp_path)

    def batch(n: int) -> list[dict[str, Any]]:
        return [{"id": f"{n}-{i}"} for i in range(50)]

    async def main() -> None:
        await store.open()
        await store.create_table("events", ["id"])
        assert await store.put_many("events", batch(0)) == [None] * 50
        killer = await asyncpg.connect(postgres_server)
        killed = await killer.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database()"
            " AND application_name = $1",
            name,
        )
        await killer.close()
        assert killed >= 1
        for error in await store.put_many("events", batch(1)):
            assert error is None or (isinstance(error, ActionError) and error.retryable)
        deadline = time.monotonic() + 5
        while (errors := await store.put_many("events", batch(1))) != [None] * 50:
            assert time.monotonic() < deadline, errors
            await asyncio.sleep(0.1)
        assert await store.count("events") == 100
        assert await store.get("events", {"id": "0-49"}) == {"id": "0-49"}

    try:
        run(main())
    finally:
        run(store.close())
