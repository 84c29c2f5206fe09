"""String functions; non-string arguments go through the standard "to String" conversion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rulebus.sql.functions import Function
from rulebus.sql.types import MAX_RESULT_SIZE, UNDEFINED, to_int_floor, to_string, utf8
from rulebus.sql.versions import V2016


def _on_string(function: Callable[[str], Any]) -> Callable[[Any], Any]:
    def impl(value: Any) -> Any:
        text = to_string(value)
        return UNDEFINED if text is UNDEFINED else function(text)

    return impl


def _on_strings(function: Callable[..., Any]) -> Callable[..., Any]:
    def impl(*values: Any) -> Any:
        texts = [to_string(v) for v in values]
        if any(t is UNDEFINED for t in texts):
            return UNDEFINED
        return function(*texts)

    return impl


def chr_(value: Any) -> Any:
    """The ASCII character with the given (rounded down) code."""
    code = to_int_floor(value)
    if type(value) is bool or code is UNDEFINED or not 0 <= code < 128:
        return UNDEFINED
    return chr(code)


def concat(*values: Any) -> Any:
    """Arrays are joined into one array; otherwise the string forms are concatenated."""
    if not values:
        return UNDEFINED
    if any(type(v) is list for v in values):
        out: list[Any] = []
        for value in values:
            if type(value) is list:
                out.extend(value)
            elif value is not UNDEFINED:
                out.append(value)
        return out if len(out) <= MAX_RESULT_SIZE else UNDEFINED
    return _on_strings(_join)(*values)


def _join(*texts: str) -> Any:
    if sum(map(len, texts)) > MAX_RESULT_SIZE:
        return UNDEFINED
    return "".join(texts)


def _replace(text: str, old: str, new: str) -> Any:
    count = len(text) + 1 if not old else text.count(old)
    if len(text) + count * (len(new) - len(old)) > MAX_RESULT_SIZE:
        return UNDEFINED
    return text.replace(old, new)


def _pad(left: bool) -> Callable[[Any, Any], Any]:
    def impl(value: Any, count: Any) -> Any:
        text, width = to_string(value), to_int_floor(count)
        if text is UNDEFINED or width is UNDEFINED or type(count) is bool:
            return UNDEFINED
        spaces = " " * min(max(width, 0), 1000)
        return spaces + text if left else text + spaces

    return impl


def substring(value: Any, start: Any, end: Any = UNDEFINED) -> Any:
    """Characters from ``start`` (inclusive) to ``end`` (exclusive), indices clamped."""
    text, first = to_string(value), to_int_floor(start)
    if text is UNDEFINED or first is UNDEFINED:
        return UNDEFINED
    size = len(text)
    first = min(max(first, 0), size)
    if end is UNDEFINED:
        return text[first:]
    last = to_int_floor(end)
    if last is UNDEFINED:
        return UNDEFINED
    last = min(max(last, 0), size)
    return text[first:last] if first < last else ""


def _affix(check: Callable[[str, str], bool]) -> Callable[[Any, Any], Any]:
    def impl(value: Any, part: Any) -> Any:
        if value is None or part is None:
            return UNDEFINED
        return _on_strings(check)(value, part)

    return impl


FUNCTIONS = [
    Function("chr", chr_, 1, 1),
    Function("concat", concat, 0, None),
    Function("endswith", _affix(str.endswith), 2, 2),
    Function("startswith", _affix(str.startswith), 2, 2),
    Function("indexof", _on_strings(str.find), 2, 2, since=V2016),
    Function("length", _on_string(len), 1, 1, since=V2016),
    Function("numbytes", _on_string(lambda s: len(utf8(s))), 1, 1, since=V2016),
    Function("lower", _on_string(str.lower), 1, 1),
    Function("upper", _on_string(str.upper), 1, 1),
    Function("lpad", _pad(left=True), 2, 2),
    Function("rpad", _pad(left=False), 2, 2),
    Function("ltrim", _on_string(lambda s: s.lstrip(" \t")), 1, 1),
    Function("rtrim", _on_string(lambda s: s.rstrip(" \t")), 1, 1),
    Function("trim", _on_string(str.strip), 1, 1),
    Function("replace", _on_strings(_replace), 3, 3),
    Function("substring", substring, 2, 3),
]
