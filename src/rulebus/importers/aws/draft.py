"""The app being made: what the converters declare, and how names become valid."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rulebus.actions import registry
from rulebus.actions.base import Action, Declared
from rulebus.config.options import Options
from rulebus.config.source import Source
from rulebus.errors import TemplateError

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def kebab(name: str) -> str:
    """``FraudArchiveBucket`` → ``fraud-archive-bucket``."""
    return _CAMEL.sub("-", name).lower()


def rule_name(name: str) -> str:
    """A name for rules, functions and notification topics: letters, digits, ``-``, ``_``."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", name).strip("-_") or "unnamed"
    return name[:128]


def table_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    if not re.match(r"[A-Za-z_]", name):
        name = f"t_{name}"
    return name[:63]


def bucket_name(name: str) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", kebab(name) if name != name.lower() else name)
    name = re.sub(r"\.{2,}", ".", name).strip(".-")
    return (name or "bucket").ljust(3, "0")[:63].rstrip(".-")


def module_name(name: str) -> str:
    """A Python module name for a function's handler file."""
    name = re.sub(r"[^a-z0-9_]+", "_", kebab(name).replace("-", "_")).strip("_")
    return name if name and not name[0].isdigit() else f"f_{name}"


@dataclass
class Stub:
    """A function whose code stays on AWS Lambda until someone ports it."""

    name: str
    module: str
    where: str  # template file:line, or "(not in the templates)"
    runtime: str = "unknown"
    handler: str = "unknown"
    code: str = ""
    timeout: float | None = None
    rules: list[str] = field(default_factory=list)


@dataclass
class Draft:
    """The app file as plain data, in the order the templates gave it."""

    name: str
    tables: dict[str, list[str]] = field(default_factory=dict)
    buckets: list[str] = field(default_factory=list)
    notifications: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    functions: dict[str, Stub] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Comment lines written above a rule in the app file.
    notes: dict[str, list[str]] = field(default_factory=dict)
    routes: list[dict[str, Any]] = field(default_factory=list)

    def declared(self) -> Declared:
        return Declared(
            tables={name: tuple(key) for name, key in self.tables.items()},
            buckets=frozenset(self.buckets),
            notifications=frozenset(self.notifications),
            functions=frozenset(self.functions),
        )

    def build(self, kind: str, options: dict[str, Any]) -> Action:
        """The action as the loader builds it; raises TemplateError as ``rulebus check`` would."""
        if kind not in registry.kinds():
            raise TemplateError(f"rulebus has no {kind} action yet", file="", line=None, key="")
        opts = Options(Source("(import)", {kind: options}), (kind,), options)
        action = registry.get(kind).from_options(opts, self.declared())
        opts.done()
        return action


class Names:
    """Unique names per kind: two resources that would share one get ``-2``, ``-3``..."""

    def __init__(self) -> None:
        self.taken: dict[str, set[str]] = {}

    def claim(self, kind: str, name: str) -> str:
        taken = self.taken.setdefault(kind, set())
        unique, n = name, 1
        while unique.lower() in taken:
            n += 1
            unique = f"{name}-{n}" if kind != "table" else f"{name}_{n}"
        taken.add(unique.lower())
        return unique
