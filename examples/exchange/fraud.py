"""The exchange's fraud check: flags about half of the buy events.

The decision is a pure function of the event id (the first 32 bits of its
SHA-256, odd means fraud), so a replayed or retried event gets the same
verdict, and tests can tell in advance which events will be flagged.
"""

from __future__ import annotations

import hashlib
from typing import Any


def is_fraud(event_id: str) -> bool:
    return int(hashlib.sha256(event_id.encode()).hexdigest()[:8], 16) % 2 == 1


def check(event: dict[str, Any], ctx: Any) -> None:
    if is_fraud(event["id"]):
        ctx.log.debug("fraud suspected in %s", event["id"])
        ctx.publish("alert/fraud", event)
