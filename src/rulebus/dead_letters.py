"""Choosing dead letters, and redriving or purging many: what ``rulebus dlq`` and the
console share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from rulebus.backends.base import DeadLetter, DeliveryStore
from rulebus.errors import BadInput, SqlError
from rulebus.sql import TopicFilter

# Dead letters per bus call when acting on many, so a long run shows progress
# and each SQLite transaction stays short.
CHUNK = 100


@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters: of one event, of one rule, whose event's topic matches a filter.

    An empty field does not filter. A topic filter that is not valid is ``BadInput``.
    """

    event: str = ""
    rule: str = ""
    topic: str = ""
    _topic: TopicFilter | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.topic:
            try:
                object.__setattr__(self, "_topic", TopicFilter(self.topic))
            except SqlError as exc:
                raise BadInput(str(exc)) from None

    def __bool__(self) -> bool:
        return bool(self.event or self.rule or self.topic)

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.event or letter.event.id == self.event)
            and (not self.rule or letter.rule == self.rule)
            and (self._topic is None or self._topic.matches(letter.event.topic))
        )

    async def chosen(self, bus: DeliveryStore) -> list[DeadLetter]:
        """The bus's dead letters that match, oldest first."""
        return [letter for letter in await bus.dead_letters() if self.matches(letter)]


async def in_chunks(
    act: Callable[[Sequence[int]], Awaitable[int]],
    ids: Sequence[int],
    done: Callable[[int], None] | None = None,
) -> int:
    """``act`` (a bus's ``redrive`` or ``purge``) on ``ids``, CHUNK at a time; returns the
    count it gave. ``done`` hears how many each chunk took."""
    count = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        count += await act(chunk)
        if done is not None:
            done(len(chunk))
    return count
