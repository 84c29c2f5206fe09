"""MQTT topic filters (the FROM clause) and topic names (where events are published)."""

from __future__ import annotations

import re

from rulebus.errors import BadInput, SqlError

#: AWS IoT allows at most 7 slashes, i.e. 8 levels, in a topic or filter.
MAX_LEVELS = 8
#: AWS IoT's limit on the UTF-8 length of a topic.
MAX_BYTES = 256


class TopicFilter:
    """A topic filter with MQTT 3.1.1 wildcards: ``+`` is one level, ``#`` the rest.

    Unlike the AWS IoT FROM page (which says ``#`` matches "one or more" levels),
    ``a/#`` also matches ``a`` itself, as MQTT 3.1.1 section 4.7.1.2 specifies.
    A filter that starts with a wildcard never matches a topic that starts with
    ``$`` (MQTT 4.7.2).
    """

    __slots__ = ("_exact", "_multi", "_prefix", "levels", "text")

    def __init__(self, text: str) -> None:
        problem = _filter_problem(text)
        if problem is not None:
            raise SqlError(f"invalid topic filter {text!r}: {problem}", text=text)
        self.text = text
        self.levels: tuple[str, ...] = tuple(text.split("/"))
        self._multi = self.levels[-1] == "#"
        fixed = self.levels[:-1] if self._multi else self.levels
        self._prefix: tuple[str, ...] = fixed
        # Filters without wildcards are compared as strings, the common case.
        self._exact = not self._multi and "+" not in fixed

    def matches(self, topic: str) -> bool:
        """Whether a published ``topic`` (a name, without wildcards) matches this filter."""
        if self._exact:
            return topic == self.text
        if topic.startswith("$") and self.levels[0] in ("+", "#"):
            return False
        levels = topic.split("/")
        prefix = self._prefix
        if self._multi:
            if len(levels) < len(prefix):
                return False
        elif len(levels) != len(prefix):
            return False
        return all(want in ("+", got) for want, got in zip(prefix, levels, strict=False))

    def __repr__(self) -> str:
        return f"TopicFilter({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TopicFilter) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


# C0 and C1 control characters, DEL, and lone surrogates (what is left in a
# str of bytes that were not UTF-8): a topic ends up in HTTP headers, file
# names, log lines and other systems' subjects, where each of these breaks
# something (a CR/LF splits a header, for one).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _common_problem(text: str) -> str | None:
    if not text:
        return "it is empty"
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        char = bad.group()
        if char == "\x00":
            return "it contains a NUL character"
        if "\ud800" <= char <= "\udfff":
            return "it is not valid UTF-8"
        return f"it contains the control character U+{ord(char):04X}"
    if len(text.encode("utf-8")) > MAX_BYTES:
        return f"it is longer than {MAX_BYTES} bytes"
    if text.count("/") >= MAX_LEVELS:
        return f"it has more than {MAX_LEVELS} levels"
    return None


def _filter_problem(text: str) -> str | None:
    problem = _common_problem(text)
    if problem is not None:
        return problem
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def validate_topic(topic: str) -> str:
    """Check a concrete topic name that an event is published to, and return it.

    Raises :class:`~rulebus.errors.BadInput` for wildcards, an empty topic or an
    empty level (legal in MQTT, but always a mistake in a topic taken from an HTTP
    path), more than 8 levels, a NUL or any other control character, text that
    was not UTF-8, more than 256 UTF-8 bytes, or a leading ``$`` (reserved for
    the system, as in AWS IoT).
    """
    problem = _common_problem(topic)
    if problem is None:
        if "+" in topic or "#" in topic:
            problem = "wildcards '+' and '#' are only allowed in topic filters"
        elif topic.startswith("$"):
            problem = "topics starting with '$' are reserved"
        elif "" in topic.split("/"):
            problem = "it has an empty level (leading, trailing or double '/')"
    if problem is not None:
        raise BadInput(f"invalid topic {topic!r}: {problem}")
    return topic


def filters_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether some topic matches both filters (given as their levels)."""
    for x, y in zip(a, b, strict=False):
        if x == "#" or y == "#":
            return True
        if x != y and "+" not in (x, y):
            return False
    if len(a) == len(b):
        return True
    # One is longer: only a trailing '#' on the longer one (matching the parent) overlaps.
    longer = a if len(a) > len(b) else b
    return len(longer) == min(len(a), len(b)) + 1 and longer[-1] == "#"
