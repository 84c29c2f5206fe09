"""Actions by name. Each action module registers its class when it is imported."""

from __future__ import annotations

from typing import TypeVar

from rulebus.actions.base import Action

A = TypeVar("A", bound=type[Action])

_ACTIONS: dict[str, type[Action]] = {}


def register(cls: A) -> A:
    _ACTIONS[cls.kind] = cls
    return cls


def get(kind: str) -> type[Action]:
    return _ACTIONS[kind]


def kinds() -> tuple[str, ...]:
    import rulebus.actions  # noqa: F401  (importing the package registers every kind)

    return tuple(sorted(_ACTIONS))
