"""Compare what a test expects with what happened, value by value, with paths.

Expected values come from YAML, actual ones from JSON: both are plain dicts,
lists and scalars. ``{$any: KIND}`` in an expected value matches any value of
that kind, for what changes from run to run (``newuuid()``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rulebus import codec

ANY = "$any"
_KINDS: dict[str, Callable[[Any], bool]] = {
    "anything": lambda v: True,
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "uuid": lambda v: isinstance(v, str) and _is_uuid(v),
}
KINDS = tuple(_KINDS)
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_SHOWN = 160  # characters of a value in a one-line difference


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Difference:
    """One way the actual value differs from the expected one, at ``path``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def matcher_kind(value: Any) -> str | None:
    """The kind of an ``{$any: KIND}`` matcher, or None if ``value`` is not one."""
    if isinstance(value, dict) and ANY in value:
        kind = value[ANY]
        return kind if isinstance(kind, str) else ""
    return None


def bad_matchers(value: Any, path: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], str]:
    """The path and reason of the first malformed matcher in ``value``, or ``((), "")``."""
    kind = matcher_kind(value)
    if kind is not None:
        if len(value) != 1:
            return path, f"{ANY} stands alone in its mapping"
        if kind not in _KINDS:
            return (*path, ANY), f"expected one of {', '.join(KINDS)}, got {value[ANY]!r}"
        return (), ""
    items: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = bad_matchers(item, (*path, key))
        if found[1]:
            return found
    return (), ""


def key_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _PLAIN_KEY.match(key):
        return f"{path}[{codec.dumps_str(key)}]"
    return f"{path}.{key}" if path else key


def show(value: Any) -> str:
    """A value on one line, as JSON, shortened if long."""
    if value is MISSING:
        return "nothing"
    try:
        text = codec.dumps_str(value)
    except codec.EncodeError:
        text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def same(expected: Any, actual: Any) -> bool:
    """Equal as JSON values: 1 equals 1.0, but true is not 1."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    return type(expected) is type(actual) and expected == actual


def compare(expected: Any, actual: Any, path: str) -> tuple[list[Difference], Any]:
    """The differences, and ``actual`` as seen through ``expected``.

    In that view every matcher that matched takes the place of the value it
    matched, so a diff of expected against it shows only real differences.
    """
    kind = matcher_kind(expected)
    if kind is not None:
        if actual is not MISSING and _KINDS[kind](actual):
            return [], expected
        return [Difference(path, f"expected any {kind}, got {show(actual)}")], actual
    if isinstance(expected, dict) and isinstance(actual, dict):
        return _compare_dicts(expected, actual, path)
    if isinstance(expected, list) and isinstance(actual, list):
        return _compare_lists(expected, actual, path)
    if actual is MISSING:
        return [Difference(path, f"expected {show(expected)}, got nothing")], actual
    if same(expected, actual):
        return [], actual
    return [Difference(path, f"expected {show(expected)}, got {show(actual)}")], actual


def _compare_dicts(
    expected: dict[str, Any], actual: dict[str, Any], path: str
) -> tuple[list[Difference], Any]:
    differences: list[Difference] = []
    view: dict[str, Any] = {}
    for key, value in expected.items():
        if key in actual:
            found, view[key] = compare(value, actual[key], key_path(path, key))
            differences += found
        else:
            differences.append(
                Difference(key_path(path, key), f"expected {show(value)}, got nothing")
            )
    for key, value in actual.items():
        if key not in expected:
            differences.append(Difference(key_path(path, key), f"unexpected {show(value)}"))
            view[key] = value
    return differences, view


def _compare_lists(
    expected: list[Any], actual: list[Any], path: str
) -> tuple[list[Difference], Any]:
    differences: list[Difference] = []
    view: list[Any] = []
    for i, (want, got) in enumerate(zip(expected, actual, strict=False)):
        found, seen = compare(want, got, key_path(path, i))
        differences += found
        view.append(seen)
    for i in range(len(actual), len(expected)):
        differences.append(
            Difference(key_path(path, i), f"expected {show(expected[i])}, got nothing")
        )
    for i in range(len(expected), len(actual)):
        differences.append(Difference(key_path(path, i), f"unexpected {show(actual[i])}"))
        view.append(actual[i])
    return differences, view
