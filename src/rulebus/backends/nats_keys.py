"""API keys in a JetStream key-value bucket beside the NATS event log (``NAME_keys``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
from nats.js import api

from rulebus import codec
from rulebus.backends.nats_bus import CONNECT_TIMEOUT, Settings, connect, parse
from rulebus.errors import BadInput, NotFound, Unavailable
from rulebus.keys import ApiKey


class NatsKeyStore:
    """The :class:`~rulebus.backends.base.KeyStore` in a KV bucket, one entry per key name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._bucket = f"{settings.stream}_keys"
        self._nc: Any = None
        self._kv: Any = None

    async def open(self) -> None:
        s = self.settings
        try:
            self._nc = await asyncio.wait_for(
                connect(s, f"rulebus keys {os.getpid()}"), CONNECT_TIMEOUT
            )
            js = self._nc.jetstream()
            try:
                self._kv = await js.key_value(self._bucket)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await js.create_key_value(
                    api.KeyValueConfig(
                        bucket=self._bucket,
                        history=1,
                        storage=api.StorageType.FILE,
                        replicas=s.replicas,
                    )
                )
        except TimeoutError:
            await self.close()
            raise Unavailable("keys", s.url, "no server answered in time") from None
        except (nats.errors.Error, OSError) as exc:
            await self.close()
            raise Unavailable("keys", s.url, str(exc) or type(exc).__name__) from None

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def create(self, key: ApiKey) -> None:
        try:
            await self._kv.create(key.name, _encode(key))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise BadInput(f"a key named {key.name!r} exists already", status=409) from None

    async def all(self) -> list[ApiKey]:
        try:
            names = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        out = []
        for name in sorted(names):
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                entry = await self._kv.get(name)
                if entry.value:
                    out.append(_decode(entry.value))
        return out

    async def revoke(self, name: str) -> None:
        try:
            await self._kv.get(name)
        except nats.js.errors.KeyNotFoundError:
            raise NotFound(f"no key named {name!r}") from None
        await self._kv.purge(name)

    async def touch(self, used: dict[str, int]) -> None:
        for name, ms in used.items():
            try:
                entry = await self._kv.get(name)
            except nats.js.errors.KeyNotFoundError:
                continue  # revoked meanwhile
            record = codec.loads(entry.value)
            if (record.get("last_used") or 0) >= ms:
                continue
            record["last_used"] = ms
            # Another process may have touched it since: its time is as good.
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await self._kv.update(name, codec.dumps(record), last=entry.revision)


def _encode(key: ApiKey) -> bytes:
    return codec.dumps(
        {
            "name": key.name,
            "lookup": key.lookup,
            "digest": key.digest,
            "scopes": list(key.scopes),
            "topics": list(key.topics),
            "rate": key.rate,
            "burst": key.burst,
            "created": key.created,
            "last_used": key.last_used,
        }
    )


def _decode(data: bytes) -> ApiKey:
    r = codec.loads(data)
    return ApiKey(
        name=r["name"],
        lookup=r["lookup"],
        digest=r["digest"],
        scopes=tuple(r["scopes"]),
        topics=tuple(r["topics"]),
        rate=r["rate"],
        burst=r["burst"],
        created=r["created"],
        last_used=r["last_used"],
    )


def from_url(url: str, data_dir: Path, **options: Any) -> NatsKeyStore:
    return NatsKeyStore(parse(url))
