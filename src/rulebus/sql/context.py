"""What a rule knows about an event besides its payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(slots=True)
class EvalContext:
    """The event's envelope, read by ``topic()``, ``clientid()``, ``timestamp()`` and friends.

    Made once per event on the engine's hot path, so not frozen: a frozen
    dataclass sets each field through ``object.__setattr__``, twice as slow.

    ``timestamp`` is the ingest time in epoch milliseconds. When it is set,
    ``timestamp()`` returns it instead of the current time, so that replaying an
    event reproduces the original output.
    """

    topic: str
    client_id: str | None = None
    principal: str | None = None
    timestamp: int | None = None
    trace_id: str | None = None


class _NoMatch:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_MATCH"

    def __bool__(self) -> bool:
        return False


#: Returned by :meth:`Rule.evaluate` when the rule does not fire.
NO_MATCH: Final = _NoMatch()
