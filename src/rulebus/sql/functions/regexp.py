"""Regular expressions (Java syntax, translated to Python's ``re``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from rulebus.sql.functions import Function
from rulebus.sql.types import UNDEFINED, to_string

_JAVA_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z])")


@functools.lru_cache(maxsize=256)
def _pattern(source: str) -> re.Pattern[str] | None:
    try:
        return re.compile(_JAVA_NAMED_GROUP.sub("(?P<", source))
    except re.error:
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


def _inputs(value: Any, pattern: Any) -> tuple[str, re.Pattern[str]] | None:
    text, source = to_string(value), to_string(pattern)
    if text is UNDEFINED or source is UNDEFINED:
        return None
    compiled = _pattern(source)
    return None if compiled is None else (text, compiled)


def regexp_matches(value: Any, pattern: Any) -> Any:
    """Whether ``value`` contains a match of ``pattern``."""
    inputs = _inputs(value, pattern)
    if inputs is None:
        return UNDEFINED
    text, compiled = inputs
    return compiled.search(text) is not None


def regexp_substr(value: Any, pattern: Any) -> Any:
    """The first match of ``pattern`` in ``value``; Undefined when there is none."""
    inputs = _inputs(value, pattern)
    if inputs is None:
        return UNDEFINED
    text, compiled = inputs
    match = compiled.search(text)
    return UNDEFINED if match is None else match.group(0)


def regexp_replace(value: Any, pattern: Any, replacement: Any) -> Any:
    """Every match of ``pattern`` replaced; ``$1`` in ``replacement`` is the first group."""
    inputs = _inputs(value, pattern)
    template = to_string(replacement)
    if inputs is None or template is UNDEFINED:
        return UNDEFINED
    parts = _replacement(template)
    text, compiled = inputs
    if parts is None or any(type(p) is int and p > compiled.groups for p in parts):
        return UNDEFINED
    expand: Callable[[re.Match[str]], str] = lambda m: "".join(  # noqa: E731
        p if type(p) is str else (m.group(p) or "") for p in parts
    )
    return compiled.sub(expand, text)


FUNCTIONS = [
    Function("regexp_matches", regexp_matches, 2, 2),
    Function("regexp_replace", regexp_replace, 3, 3),
    Function("regexp_substr", regexp_substr, 2, 2),
]
