"""Topic routing with a trie of topic filters.

Matching walks at most one path per topic level (plus the ``+`` and ``#``
branches), so its cost grows with the depth of the topic, not with the
number of rules. Results are cached per topic name, since real traffic
uses few distinct topics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

CACHE_LIMIT = 10_000


class _Node(Generic[T]):
    __slots__ = ("children", "here", "rest")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.here: list[T] = []  # filters that end at this level
        self.rest: list[T] = []  # filters that end with '#' at this level


class Router(Generic[T]):
    """Maps topic filters (as lists of levels) to values; ``match`` finds them for a topic."""

    def __init__(self, entries: Iterable[tuple[tuple[str, ...], T]] = ()) -> None:
        self._root: _Node[T] = _Node()
        self._cache: dict[str, tuple[T, ...]] = {}
        for levels, value in entries:
            self.add(levels, value)

    def add(self, levels: tuple[str, ...], value: T) -> None:
        node = self._root
        for level in levels:
            if level == "#":
                node.rest.append(value)
                self._cache.clear()
                return
            node = node.children.setdefault(level, _Node())
        node.here.append(value)
        self._cache.clear()

    def match(self, topic: str) -> tuple[T, ...]:
        found = self._cache.get(topic)
        if found is not None:
            return found
        levels = topic.split("/")
        out: list[T] = []
        # MQTT: filters that start with a wildcard do not match '$' topics.
        self._walk(self._root, levels, 0, out, dollar=topic.startswith("$"))
        result = tuple(out)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = result
        return result

    def _walk(self, node: _Node[T], levels: list[str], i: int, out: list[T], dollar: bool) -> None:
        wildcards = not (dollar and i == 0)
        if wildcards:
            # 'a/#' matches 'a' itself too (MQTT 3.1.1, 4.7.1.2).
            out.extend(node.rest)
        if i == len(levels):
            out.extend(node.here)
            return
        child = node.children.get(levels[i])
        if child is not None:
            self._walk(child, levels, i + 1, out, dollar)
        if wildcards:
            plus = node.children.get("+")
            if plus is not None:
                self._walk(plus, levels, i + 1, out, dollar)
