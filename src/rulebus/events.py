"""The event envelope that travels through the bus."""

from __future__ import annotations

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


MAX_HOPS = 16
