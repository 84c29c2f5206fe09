"""Who is calling: API keys checked per request, with scopes, topic filters and rate limits.

Each API process keeps the keys in memory. It reads them again from the key
store when a request brings a key it does not know (so a new key works at
once), and at most once a second otherwise (so a revoked key stops working
within about a second on every process). When
the store cannot be read, the keys last read stay in force (and a warning is
logged), so a short outage of the store does not lock everyone out.

Rate limits are token buckets kept by each API process: with N API
processes behind a balancer, a key may make up to N times its rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable

from rulebus import keys
from rulebus.backends.base import KeyStore
from rulebus.errors import RateLimited, RulebusError, Unauthorized
from rulebus.keys import ApiKey

log = logging.getLogger("rulebus.auth")

REFRESH = 1.0  # seconds between reads of the key store, at most, for known keys
# Unknown keys make a read too, at most this often: a flood of made-up keys
# costs the store 20 small reads a second, not one per request.
MISS_SPACING = 0.05
TOUCH_EVERY = 10.0  # seconds between writes of last-use times


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class Authenticator:
    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._keys: dict[str, ApiKey] = {}  # lookup id -> key
        self._loaded_at = -math.inf
        self._load_started = -math.inf
        self._loading: asyncio.Task[None] | None = None
        self._buckets: dict[str, _Bucket] = {}
        self._used: dict[str, int] = {}
        self._toucher: asyncio.Task[None] | None = None
        self._warned = False

    async def start(self) -> None:
        await self._store.open()
        await self._load()
        self._toucher = asyncio.create_task(self._touch_loop(), name="key-last-use")

    async def stop(self) -> None:
        if self._toucher is not None:
            self._toucher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._toucher
        await self._flush()
        await self._store.close()

    async def authenticate(self, authorization: str | None) -> ApiKey:
        """The key an ``Authorization`` header carries; ``Unauthorized`` (401) if none."""
        if not authorization:
            raise Unauthorized(
                "this route needs an API key: send Authorization: Bearer KEY", status=401
            )
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Unauthorized("expected Authorization: Bearer KEY", status=401)
        given = given.strip()
        asked = time.monotonic()
        if asked - self._loaded_at > REFRESH:
            await self._read_after(asked)
        lookup = keys.lookup_of(given)
        found = self._keys.get(lookup) if lookup is not None else None
        if found is None and lookup is not None and self._load_started < asked:
            await self._read_after(asked)  # perhaps made since the last read
            found = self._keys.get(lookup)
        # Compared even when no key has this lookup id, so that both take as long.
        if not keys.matches(given, found or _NOBODY) or found is None:
            raise Unauthorized("unknown or revoked API key", status=401)
        self._used[found.name] = int(time.time() * 1000)
        self._charge(found)
        return found

    def _charge(self, key: ApiKey) -> None:
        if key.rate is None:
            return
        now = time.monotonic()
        bucket = self._buckets.get(key.name)
        if bucket is None:
            bucket = self._buckets[key.name] = _Bucket(float(key.burst), now)
        bucket.tokens = min(float(key.burst), bucket.tokens + (now - bucket.at) * key.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            wait = math.ceil((1.0 - bucket.tokens) / key.rate)
            raise RateLimited(
                f"key {key.name!r} is over its rate limit of {key.describe_rate()};"
                f" retry in {wait} s",
                retry_after=wait,
            )
        bucket.tokens -= 1.0

    async def _read_after(self, asked: float) -> None:
        """Wait for a read of the store that started at ``asked`` or later.

        Concurrent requests share one read; reads start at most every
        ``MISS_SPACING`` seconds.
        """
        while self._load_started < asked:
            task = self._loading
            if task is not None and not task.done():
                await asyncio.shield(task)
                continue
            wait = self._load_started + MISS_SPACING - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._load_started = time.monotonic()
            self._loading = asyncio.create_task(self._load())
        if self._loading is not None and not self._loading.done():
            await asyncio.shield(self._loading)

    async def _load(self) -> None:
        try:
            found = await self._store.all()
        except (RulebusError, OSError) as exc:
            if not self._warned:
                log.warning("cannot read the API keys (%s); the keys last read stay in force", exc)
                self._warned = True
            self._loaded_at = time.monotonic()
            return
        self._warned = False
        self._keys = {key.lookup: key for key in found}
        self._loaded_at = time.monotonic()
        names = {key.name for key in found}
        for name in [n for n in self._buckets if n not in names]:
            del self._buckets[name]

    async def _touch_loop(self) -> None:
        while True:
            await asyncio.sleep(TOUCH_EVERY)
            await self._flush()

    async def _flush(self) -> None:
        used, self._used = self._used, {}
        if not used:
            return
        try:
            await self._store.touch(used)
        except (RulebusError, OSError) as exc:
            log.warning("cannot record when API keys were last used: %s", exc)


def require(key: ApiKey, scopes: Iterable[str], what: str) -> None:
    """Let ``key`` through if it holds one of ``scopes``; else 403, naming what is missing."""
    wanted = tuple(scopes)
    if not any(scope in key.scopes for scope in wanted):
        needed = " or ".join(repr(s) for s in wanted)
        raise Unauthorized(
            f"key {key.name!r} lacks the {needed} scope needed to {what}"
            f" (it has: {', '.join(key.scopes)})",
            status=403,
        )


def require_topic(key: ApiKey, topic: str) -> None:
    if not key.may_publish(topic):
        raise Unauthorized(
            f"key {key.name!r} may not publish to {topic!r}: its topic filters are"
            f" {', '.join(key.topics)}",
            status=403,
        )


# Stands in for a key that does not exist, so that a miss costs a comparison too.
_NOBODY = ApiKey(name="", lookup="", digest="0" * 64, scopes=())
