"""The benchmark's event stream: deterministic, half buys and half sells.

The load generator (in its own process) and the harness (which must know how many
fraud alerts to expect) build the same stream from the same ``(n, seed)``, so no
event data crosses a process boundary.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Iterator

SYMBOLS = ("ACME", "GLOBEX", "INITECH", "UMBRELLA", "HOOLI")

#: The single-event body of figures 1 and 5 (the issue's example).
SINGLE_BODY = b'{"type":"buy","price":123.45}'


def is_fraud(event_id: str) -> bool:
    """The exchange example's deterministic fraud rule; the peer uses the same one."""
    return int(hashlib.sha256(event_id.encode()).hexdigest()[:8], 16) % 2 == 1


def make_events(n: int, seed: int, event_type: str | None = None) -> Iterator[dict[str, object]]:
    """Yield ``n`` events; even positions are buys, odd positions sells.

    ``event_type`` gives every event that type instead (figure 4's single topic).

    The ids are UUID4s drawn from a seeded generator, so a run is reproducible and
    two runs with different seeds never share an id.
    """
    rng = random.Random(seed)
    for i in range(n):
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        yield {
            "id": event_id,
            "type": event_type or ("buy" if i % 2 == 0 else "sell"),
            "symbol": SYMBOLS[i % len(SYMBOLS)],
            "price": round(rng.uniform(1.0, 500.0), 2),
            "qty": rng.randint(1, 1000),
        }


def expected_alerts(n: int, seed: int) -> int:
    """How many buys of the stream ``(n, seed)`` the fraud rule flags."""
    return sum(1 for e in make_events(n, seed) if e["type"] == "buy" and is_fraud(str(e["id"])))


def encode_batches(
    n: int, seed: int, batch_size: int, event_type: str | None = None
) -> list[bytes]:
    """The stream as JSON-array bodies for ``POST /events``, ``batch_size`` items each."""
    out: list[bytes] = []
    batch: list[dict[str, object]] = []
    for event in make_events(n, seed, event_type):
        batch.append(event)
        if len(batch) == batch_size:
            out.append(json.dumps(batch, separators=(",", ":")).encode())
            batch = []
    if batch:
        out.append(json.dumps(batch, separators=(",", ":")).encode())
    return out
