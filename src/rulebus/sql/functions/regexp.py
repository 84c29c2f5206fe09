"""Regular expressions (Java syntax, translated to Python's ``re``).

Python's ``re`` backtracks and cannot be interrupted, so a pattern such as
``(a+)+$`` can take exponential time. A pattern written in the rule is trusted,
like the rest of the rule. A pattern computed per event (from the payload) is
refused, giving Undefined, when it could backtrack catastrophically: a repeated
group that contains a repetition or an alternation, or a backreference; or when it
is longer than :data:`MAX_RUNTIME_PATTERN`.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from typing import Any

from rulebus.sql.functions import Function
from rulebus.sql.types import MAX_RESULT_SIZE, UNDEFINED, to_string

_JAVA_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z])")
_BOUNDED = re.compile(r"\{(\d*)(,?)(\d*)\}")
_GROUP_PREFIX = re.compile(r"\(\?(?:[:=!>|]|<[=!]|P?<[A-Za-z_]\w*>|[aiLmsux-]*[:)])?")

#: The longest pattern accepted from an event (literal patterns have no limit).
MAX_RUNTIME_PATTERN = 1000


class _TooLong(Exception):
    pass


def risky(source: str) -> bool:
    """Whether a pattern may backtrack catastrophically (or is too long to check).

    A conservative scan: a group repeated by ``*``, ``+`` or ``{n,m}`` (m > 1) must
    contain neither a repetition nor ``|``; backreferences are refused outright.
    """
    if len(source) > MAX_RUNTIME_PATTERN:
        return True
    # One entry per open group: whether it contains a repetition or an alternation.
    groups = [False]
    last_group = False  # the atom just before a quantifier was a group with one of those
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char == "\\":
            follower = source[i + 1 : i + 2]
            if (follower.isdigit() and follower != "0") or follower == "k":
                return True
            i, last_group = i + 2, False
            continue
        if char == "[":
            i += 1
            if source[i : i + 1] == "^":
                i += 1
            if source[i : i + 1] == "]":
                i += 1
            while i < n and source[i] != "]":
                i += 2 if source[i] == "\\" else 1
            i, last_group = i + 1, False
            continue
        if char == "(":
            if source.startswith("?P=", i + 1):
                return True
            groups.append(False)
            prefix = _GROUP_PREFIX.match(source, i)
            i, last_group = max(i + 1, prefix.end() if prefix else 0), False
            continue
        if char == ")":
            inner = groups.pop() if len(groups) > 1 else False
            groups[-1] = groups[-1] or inner
            i, last_group = i + 1, inner
            continue
        if char == "|":
            groups[-1] = True
            i, last_group = i + 1, False
            continue
        repeats = char in "*+"
        length = 1
        if char == "{":
            bounded = _BOUNDED.match(source, i)
            if bounded is not None and (bounded.group(1) or bounded.group(3)):
                low, comma, high = bounded.groups()
                repeats = (bool(comma) and not high) or int(high or low or "0") > 1
                length = bounded.end() - i
        if repeats or char == "?":
            if repeats and last_group:
                return True
            groups[-1] = True  # `(a?)+` backtracks like `(a|)+`
            i, last_group = i + length, False
            continue
        i, last_group = i + 1, False
    return False


@functools.lru_cache(maxsize=256)
def _pattern(source: str) -> re.Pattern[str] | None:
    try:
        with warnings.catch_warnings():
            # FutureWarning for "[[" and friends: not the event's business.
            warnings.simplefilter("ignore")
            return re.compile(_JAVA_NAMED_GROUP.sub("(?P<", source))
    except (re.error, RecursionError, OverflowError):
        return None


@functools.lru_cache(maxsize=256)
def _replacement(source: str) -> tuple[str | int, ...] | None:
    """Java replacement syntax: ``$n`` is group n, a backslash quotes the next character."""
    parts: list[str | int] = []
    literal: list[str] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char == "\\":
            if i + 1 == len(source):
                return None
            literal.append(source[i + 1])
            i += 2
        elif char == "$":
            j = i + 1
            while j < len(source) and source[j].isdigit():
                j += 1
            if j == i + 1:
                return None
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(int(source[i + 1 : j]))
            i = j
        else:
            literal.append(char)
            i += 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


@functools.lru_cache(maxsize=256)
def _runtime_pattern(source: str) -> re.Pattern[str] | None:
    return None if risky(source) else _pattern(source)


def _inputs(value: Any, pattern: Any, trusted: bool = False) -> tuple[str, re.Pattern[str]] | None:
    text, source = to_string(value), to_string(pattern)
    if text is UNDEFINED or source is UNDEFINED:
        return None
    compiled = _pattern(source) if trusted else _runtime_pattern(source)
    return None if compiled is None else (text, compiled)


def regexp_matches(value: Any, pattern: Any, trusted: bool = False) -> Any:
    """Whether ``value`` contains a match of ``pattern``."""
    inputs = _inputs(value, pattern, trusted)
    if inputs is None:
        return UNDEFINED
    text, compiled = inputs
    return compiled.search(text) is not None


def regexp_substr(value: Any, pattern: Any, trusted: bool = False) -> Any:
    """The first match of ``pattern`` in ``value``; Undefined when there is none."""
    inputs = _inputs(value, pattern, trusted)
    if inputs is None:
        return UNDEFINED
    text, compiled = inputs
    match = compiled.search(text)
    return UNDEFINED if match is None else match.group(0)


def regexp_replace(value: Any, pattern: Any, replacement: Any, trusted: bool = False) -> Any:
    """Every match of ``pattern`` replaced; ``$1`` in ``replacement`` is the first group."""
    inputs = _inputs(value, pattern, trusted)
    template = to_string(replacement)
    if inputs is None or template is UNDEFINED:
        return UNDEFINED
    parts = _replacement(template)
    text, compiled = inputs
    if parts is None or any(type(p) is int and p > compiled.groups for p in parts):
        return UNDEFINED
    size = len(text)

    def expand(match: re.Match[str]) -> str:
        nonlocal size
        out = "".join(p if type(p) is str else (match.group(p) or "") for p in parts)
        size += len(out) - (match.end() - match.start())
        if size > MAX_RESULT_SIZE:
            raise _TooLong
        return out

    try:
        return compiled.sub(expand, text)
    except _TooLong:
        return UNDEFINED


def _trusted(function: Callable[..., Any]) -> Callable[..., Any]:
    return functools.partial(function, trusted=True)


FUNCTIONS = [
    Function("regexp_matches", regexp_matches, 2, 2, literal_impl=_trusted(regexp_matches)),
    Function("regexp_replace", regexp_replace, 3, 3, literal_impl=_trusted(regexp_replace)),
    Function("regexp_substr", regexp_substr, 2, 2, literal_impl=_trusted(regexp_substr)),
]
