"""Typed, strict reading of one mapping in the app file.

Every getter names the key it reads, so a wrong value reports its own line;
``done()`` rejects keys nobody asked for, with a "did you mean" hint.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, NoReturn

from rulebus.config.source import Path_, Source
from rulebus.errors import BadInput
from rulebus.sql import validate_topic

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?$")
_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    None: 1,
}


class Options:
    """A mapping at ``path`` in ``source``, read key by key."""

    def __init__(self, source: Source, path: Path_, value: Any, *, what: str = "a mapping") -> None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            source.fail(path, f"expected {what}, got {_kind(value)}")
        self.source = source
        self.path = path
        self.value: dict[str, Any] = value
        self._seen: set[str] = set()

    def fail(self, key: str | None, message: str) -> NoReturn:
        self.source.fail(self.path if key is None else (*self.path, key), message)

    def missing(self, key: str, expected: str) -> NoReturn:
        """Report a missing key, or the misspelt key the user meant to write."""
        for other in self.value:
            # A key already read is not a misspelling (hash_key_field is not hash_key_value).
            if other in self._seen:
                continue
            if other != key and difflib.get_close_matches(other, [key], n=1):
                self.fail(other, f"unknown key; did you mean {key!r}?")
        self.fail(key, f"required: {expected}")

    def has(self, key: str) -> bool:
        self._seen.add(key)  # a key asked about is a known key, for ``done``'s hint
        return key in self.value

    def raw(self, key: str, default: Any = None) -> Any:
        self._seen.add(key)
        return self.value.get(key, default)

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.raw(key)
        if value is None:
            if required or default is None:
                if required:
                    self.missing(key, "expected a string")
                return ""
            return default
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty string, got {_kind(value)}")
        return value

    def optional_str(self, key: str) -> str | None:
        return self.text(key) or None

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.raw(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.fail(key, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {value!r}")
        return value

    def duration(self, key: str, default: float) -> float:
        """Seconds, as a number or a string such as ``500ms``, ``5s``, ``2m``, ``6h`` or ``7d``."""
        value = self.raw(key, default)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
        match = _DURATION.match(str(value)) if isinstance(value, str) else None
        if match is None or float(match.group(1)) <= 0:
            self.fail(
                key,
                f"expected a positive duration such as 5, 500ms, 5s, 2m, 6h or 7d, got {value!r}",
            )
        return float(match.group(1)) * _UNITS[match.group(2)]

    def optional_duration(self, key: str) -> float | None:
        """A ``duration``, or None where the key is absent."""
        return None if self.raw(key) is None else self.duration(key, 1.0)

    def size(self, key: str) -> int | None:
        """Bytes, as a number or a string such as ``512KB``, ``10GB`` or ``1GiB``; None if absent.

        KB, MB and GB are powers of 1000; KiB, MiB and GiB powers of 1024.
        """
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        match = _SIZE.match(value.strip()) if isinstance(value, str) else None
        size = 0 if match is None else int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
        if size <= 0:
            self.fail(key, f"expected a positive size such as 500MB, 10GB or 1GiB, got {value!r}")
        return size

    def str_list(self, key: str, *, required: bool = False) -> list[str]:
        value = self.raw(key)
        if value is None:
            if required:
                self.missing(key, "expected a list of strings")
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(key, f"expected a list of strings, got {_kind(value)}")
        return list(value)

    def section(self, key: str, *, what: str = "a mapping") -> Options:
        return Options(self.source, (*self.path, key), self.raw(key), what=what)

    def done(self) -> None:
        for key in self.value:
            if key not in self._seen:
                hint = _closest(key, self._seen)
                expected = ", ".join(sorted(self._seen)) or "none"
                extra = f"; did you mean {hint[0]!r}?" if hint else f" (expected: {expected})"
                self.fail(key, f"unknown key{extra}")


def _closest(key: str, known: set[str]) -> list[str]:
    """The known key ``key`` was probably meant to be, ignoring case, ``_`` and ``-``
    (``errorAction`` and ``error-action`` mean ``error_action``)."""

    def plain(text: str) -> str:
        return text.lower().replace("_", "").replace("-", "")

    by_plain = {plain(k): k for k in sorted(known)}
    if plain(key) in by_plain:
        return [by_plain[plain(key)]]
    hint = difflib.get_close_matches(plain(key), list(by_plain), n=1)
    return [by_plain[hint[0]]] if hint else []


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return f"{type(value).__name__} ({value!r})"


def placeholders(template: str) -> list[str]:
    """The expressions inside ``${…}`` in a template, found by matching braces."""
    found = []
    i = template.find("${")
    while i != -1:
        depth, j = 1, i + 2
        while j < len(template) and depth:
            depth += {"{": 1, "}": -1}.get(template[j], 0)
            j += 1
        found.append(template[i + 2 : j - 1])
        i = template.find("${", j)
    return found


def constant_shape(template: str) -> str:
    """The template with every ``${…}`` replaced by one plain character.

    What a template becomes at run time cannot be known at load time, but its
    constant parts can be checked: ``../${id}`` or ``a/#/${x}`` are wrong for
    every event.
    """
    for expr in placeholders(template):
        template = template.replace("${" + expr + "}", "x", 1)
    return template


def check_topic_template(opts: Options, key: str, template: str) -> None:
    """Fail at ``key`` if a topic template is invalid whatever its values are."""
    try:
        validate_topic(constant_shape(template))
    except BadInput as exc:
        opts.fail(key, exc.message.replace(repr(constant_shape(template)), repr(template)))
