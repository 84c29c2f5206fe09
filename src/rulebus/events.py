"""The event envelope that travels through the bus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Event:
    """One published event.

    ``payload`` is the decoded JSON value; it is decoded once at ingest and
    shared (read-only) by every rule that sees the event. ``seq`` is the
    bus's position, assigned when the event is durably appended.
    """

    id: str
    topic: str
    ts: int
    payload: Any
    client_id: str | None = None
    principal: str | None = None
    seq: int = 0
