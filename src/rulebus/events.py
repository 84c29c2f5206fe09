"""The event envelope that travels through the bus."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Event:
    """One published event.

    ``payload`` is the decoded JSON value; it is decoded once at ingest and
    shared (read-only) by every rule that sees the event. ``raw`` is its
    encoding, made once where the event is made. ``seq`` is the bus's
    position, assigned when the event is durably appended. ``hops`` stops
    rules that publish into their own topic filter from looping for ever.
    ``fresh_id`` is never stored.
    """

    id: str
    topic: str
    ts: int
    payload: Any
    client_id: str | None = None
    principal: str | None = None
    seq: int = 0
    raw: bytes | None = None
    hops: int = 0  # how many rules published it on the way from its origin
    # The id was made here just now, so it cannot be in the log already: a bus
    # may skip its duplicate check (and batch such events) for it.
    fresh_id: bool = False


MAX_HOPS = 16


_random = b""
_random_lock = threading.Lock()


def new_id() -> str:
    """A time-ordered (version 7, RFC 9562) UUID: Unix time in milliseconds, then
    74 random bits from os.urandom, drawn 4 KiB at a time rather than one system
    call per id.

    Ids that grow with time are inserted at the end of the log's id index, so
    a commit writes one or two of its pages. Random ids land all over it: once
    the index outgrows the cache, a 4 KB page per event, written to the WAL and
    again by the checkpoint.
    """
    global _random
    with _random_lock:
        if len(_random) < 10:
            _random = os.urandom(4096)
        rand, _random = _random[:10], _random[10:]
    return _uuid_text((time.time_ns() // 1_000_000).to_bytes(6, "big") + rand, 7)


def name_id(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``, without building a ``uuid.UUID``."""
    return _uuid_text(hashlib.sha1(namespace.bytes + name.encode()).digest(), 5)


def _uuid_text(raw: bytes, version: int) -> str:
    """The text of the UUID made of ``raw``'s first 16 bytes with ``version`` and
    the RFC 4122 variant set, as ``str(uuid.UUID(bytes=..., version=...))`` gives."""
    h = bytes(
        (
            *raw[:6],
            (raw[6] & 0x0F) | (version << 4),
            raw[7],
            (raw[8] & 0x3F) | 0x80,
            *raw[9:16],
        )
    ).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
