"""The ObjectStore contract: the file store and the S3 store (on moto) behave alike."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore.session
import pytest

from rulebus.backends.base import ObjectStore
from rulebus.backends.registry import open_store
from rulebus.errors import ActionError, BadInput, NotFound, RulebusError, Unavailable
from tests.services.s3 import S3Server

BAD_BUCKETS = ["", "ab", "Upper", "a_b", "a..b", "-ab", "ab-", "x" * 64, "a/b"]
BAD_KEYS = ["", "../x", "a/./b", "a/../../x", "/abs", "a//b", "a/", ".hidden", "a b"]


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for a test and its fixtures: a store's client belongs to one loop."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each backend's URL; S3 is moto's, with buckets no other test sees."""
    if request.param == "file":
        return "file"
    return str(request.getfixturevalue("s3_env"))


def opened(runner: asyncio.Runner, url: str, data_dir: Path) -> Any:
    store = open_store("objects", url, data_dir)
    runner.run(store.open())
    return store


@pytest.fixture
def object_store(runner: asyncio.Runner, store_url: str, tmp_path: Path) -> Iterator[ObjectStore]:
    """An opened store with an empty bucket ``bkt``."""
    store = opened(runner, store_url, tmp_path)
    runner.run(store.create_bucket("bkt"))
    yield store
    runner.run(store.close())


async def keys(store: ObjectStore, bucket: str = "bkt", prefix: str = "") -> list[str]:
    return [key async for key in store.list(bucket, prefix)]


def test_put_then_get_returns_the_body(object_store: ObjectStore, runner: asyncio.Runner) -> None:
    """get returns exactly the bytes put, binary and empty bodies included."""
    bodies = {"text.json": b'{"a": 1}', "binary.bin": bytes(range(256)) * 40, "empty": b""}

    async def main() -> None:
        for key, body in bodies.items():
            await object_store.put("bkt", key, body)
        await object_store.flush()
        for key, body in bodies.items():
            assert await object_store.get("bkt", key) == body

    runner.run(main())


def test_put_replaces_the_object(object_store: ObjectStore, runner: asyncio.Runner) -> None:
    """A put to an existing key replaces its body, also with a shorter one."""

    async def main() -> None:
        await object_store.put("bkt", "k.json", b"the first, longer body")
        await object_store.put("bkt", "k.json", b"second")
        assert await object_store.get("bkt", "k.json") == b"second"
        assert await keys(object_store) == ["k.json"]

    runner.run(main())


def test_put_many_reports_each_object(object_store: ObjectStore, runner: asyncio.Runner) -> None:
    """An invalid key fails only its own object, with BadInput; the others are stored."""

    async def main() -> None:
        objects = [("ok/1.json", b"1"), ("../x", b"2"), ("a/./b", b"3"), ("ok/2.json", b"4")]
        errors = await object_store.put_many("bkt", objects)
        assert errors[0] is None and errors[3] is None
        assert isinstance(errors[1], BadInput) and isinstance(errors[2], BadInput)
        assert await keys(object_store) == ["ok/1.json", "ok/2.json"]
        assert await object_store.get("bkt", "ok/2.json") == b"4"

    runner.run(main())


def test_nested_keys_are_objects(object_store: ObjectStore, runner: asyncio.Runner) -> None:
    """A key with '/' is one object, listed by its full key."""

    async def main() -> None:
        assert await object_store.put_many("bkt", [("a/b/c.json", b"c"), ("a/d.json", b"d")]) == [
            None,
            None,
        ]
        assert await object_store.get("bkt", "a/b/c.json") == b"c"
        assert sorted(await keys(object_store)) == ["a/b/c.json", "a/d.json"]
        with pytest.raises(NotFound):
            await object_store.get("bkt", "a/b")

    runner.run(main())


def test_list_yields_keys_in_lexicographic_order(
    object_store: ObjectStore, runner: asyncio.Runner
) -> None:
    """list yields keys in byte order, as S3 does, wherever '/' falls in them."""
    names = ["b", "a_z", "a/b", "a.json", "A", "a-", "a/b.c/d", "a/b-c"]

    async def main() -> None:
        assert await object_store.put_many("bkt", [(k, b"x") for k in names]) == [None] * 8
        assert await keys(object_store) == sorted(names)

    runner.run(main())


def test_list_filters_by_prefix(object_store: ObjectStore, runner: asyncio.Runner) -> None:
    """The prefix is a plain string prefix of the key, not a folder (order aside)."""
    names = ["logs/2023-12.json", "logs/2024-01.json", "logs/2024-02.json", "logsx", "other"]

    async def main() -> None:
        assert await object_store.put_many("bkt", [(k, b"x") for k in names]) == [None] * 5
        assert await keys(object_store, prefix="logs/2024-") == names[1:3]
        assert sorted(await keys(object_store, prefix="logs")) == names[:4]
        assert await keys(object_store, prefix="nothing") == []
        assert sorted(await keys(object_store, prefix="")) == names

    runner.run(main())


def test_get_of_a_missing_key_is_not_found(
    object_store: ObjectStore, runner: asyncio.Runner
) -> None:
    """get of a key never put raises NotFound naming the key and bucket."""

    async def main() -> None:
        with pytest.raises(NotFound, match=r"^no object 'nope\.json' in bucket 'bkt'$"):
            await object_store.get("bkt", "nope.json")

    runner.run(main())


def test_a_missing_bucket_is_not_found(object_store: ObjectStore, runner: asyncio.Runner) -> None:
    """get, list and put on a bucket never created fail with NotFound."""

    async def main() -> None:
        with pytest.raises(NotFound, match="no bucket named 'missing'"):
            await object_store.get("missing", "k.json")
        with pytest.raises(NotFound, match="no bucket named 'missing'"):
            await keys(object_store, "missing")
        [error] = await object_store.put_many("missing", [("k.json", b"x")])
        assert isinstance(error, NotFound)

    runner.run(main())


async def accepted(names: list[str], call: Callable[[str], Awaitable[Any]]) -> list[str]:
    """The names ``call`` does not refuse with BadInput."""
    passed = []
    for name in names:
        try:
            await call(name)
        except BadInput:
            continue
        passed.append(name)
    return passed


def test_invalid_bucket_names_are_refused(
    object_store: ObjectStore, runner: asyncio.Runner
) -> None:
    """A bucket name that breaks S3's naming rules is refused by every operation."""
    store = object_store

    async def main() -> None:
        assert await accepted(BAD_BUCKETS, store.create_bucket) == []
        assert await accepted(BAD_BUCKETS, lambda name: store.put(name, "k.json", b"x")) == []
        assert await accepted(BAD_BUCKETS, lambda name: store.get(name, "k.json")) == []
        assert await accepted(BAD_BUCKETS, lambda name: keys(store, name)) == []

    runner.run(main())


def test_path_escaping_keys_are_refused(object_store: ObjectStore, runner: asyncio.Runner) -> None:
    """A key that is empty, has '.', '..' or empty segments, or unsafe characters is refused."""
    store = object_store

    async def main() -> None:
        assert await accepted(BAD_KEYS, lambda key: store.put("bkt", key, b"x")) == []
        assert await accepted(BAD_KEYS, lambda key: store.get("bkt", key)) == []
        assert await keys(store) == []

    runner.run(main())


def test_a_second_store_sees_the_objects(
    object_store: ObjectStore, runner: asyncio.Runner, store_url: str, tmp_path: Path
) -> None:
    """Objects put and flushed by one store are there for another opened on the same URL."""
    runner.run(object_store.put("bkt", "kept/1.json", b"kept"))
    runner.run(object_store.flush())
    other = opened(runner, store_url, tmp_path)
    try:
        assert runner.run(other.get("bkt", "kept/1.json")) == b"kept"
        assert runner.run(keys(other)) == ["kept/1.json"]
    finally:
        runner.run(other.close())


def test_concurrent_put_many_calls_all_land(
    object_store: ObjectStore, runner: asyncio.Runner
) -> None:
    """Many put_many calls at once store every object; racing puts of one key leave one body."""
    bodies = [bytes([65 + n]) * 1000 for n in range(8)]

    async def batch(n: int) -> list[Exception | None]:
        objects = [(f"batch-{n}/{i:03}.json", b"%d" % i) for i in range(40)]
        return await object_store.put_many("bkt", [*objects, ("shared.bin", bodies[n])])

    async def main() -> None:
        results = await asyncio.gather(*(batch(n) for n in range(8)))
        assert [error for errors in results for error in errors] == [None] * 8 * 41
        assert len(await keys(object_store, prefix="batch-")) == 320
        assert await object_store.get("bkt", "batch-7/039.json") == b"39"
        assert await object_store.get("bkt", "shared.bin") in bodies

    runner.run(main())


# -- S3 only -------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("given_by", ["url", "environment"])
def test_s3_unreachable_at_open_is_unavailable(
    runner: asyncio.Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_by: str
) -> None:
    """open fails fast with Unavailable naming the endpoint, however it was given."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    if given_by == "url":
        url = f"s3://?endpoint={endpoint}"
    else:
        url = "s3://"
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    store = open_store("objects", url, tmp_path)
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        runner.run(store.open())
    assert time.monotonic() - started < 10
    assert caught.value.what == "objects"
    assert endpoint in str(caught.value)


def test_s3_outage_fails_puts_as_retryable(
    s3_server: S3Server, s3_env: str, runner: asyncio.Runner, tmp_path: Path
) -> None:
    """With S3 down, put_many returns retryable ActionErrors; once it is back, puts work."""
    store = opened(runner, s3_env, tmp_path)
    try:
        runner.run(store.create_bucket("bkt"))
        assert runner.run(store.put_many("bkt", [("before.json", b"1")])) == [None]
        s3_server.stop()
        try:
            started = time.monotonic()
            errors = runner.run(store.put_many("bkt", [("a.json", b"1"), ("b/c.json", b"2")]))
            assert time.monotonic() - started < 10
        finally:
            s3_server.start()
        for error, key in zip(errors, ["a.json", "b/c.json"], strict=True):
            assert isinstance(error, ActionError) and error.retryable
            assert f"object {key!r} in bucket 'bkt'" in error.message
        # moto kept its buckets in memory only: make it again, as a restarted engine would.
        runner.run(store.create_bucket("bkt"))
        assert runner.run(store.put_many("bkt", [("after.json", b"2")])) == [None]
        assert runner.run(store.get("bkt", "after.json")) == b"2"
    finally:
        runner.run(store.close())


def test_s3_bucket_prefix_names_the_s3_bucket(
    s3_server: S3Server, s3_env: str, runner: asyncio.Runner, tmp_path: Path
) -> None:
    """The app bucket 'bkt' is the S3 bucket bucket_prefix + 'bkt', as a plain client sees it."""
    prefix = parse_qs(urlsplit(s3_env).query)["bucket_prefix"][0]
    store = opened(runner, s3_env, tmp_path)
    try:
        runner.run(store.create_bucket("bkt"))
        runner.run(store.put("bkt", "k.json", b"body"))
    finally:
        runner.run(store.close())
    raw = botocore.session.get_session().create_client("s3", endpoint_url=s3_server.endpoint)
    assert prefix + "bkt" in [b["Name"] for b in raw.list_buckets()["Buckets"]]
    assert raw.get_object(Bucket=prefix + "bkt", Key="k.json")["Body"].read() == b"body"


@pytest.mark.parametrize(
    "url",
    [
        "s3://?bucket_prefix=Bad_",
        "s3://?bucket_prefx=t-",
        "s3://bucket",
        "s3://?bucket_prefix=" + "p" * 61,
    ],
)
def test_s3_url_mistakes_are_refused(tmp_path: Path, url: str) -> None:
    """A bucket prefix that cannot start a bucket name, or an unknown option, is refused."""
    with pytest.raises(RulebusError, match="--objects"):
        open_store("objects", url, tmp_path)
