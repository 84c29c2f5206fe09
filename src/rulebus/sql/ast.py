"""The syntax tree of a rule: what the parser produces and the compiler consumes.

Every node carries the position of its first character so that the compiler can
report semantic errors (an unknown function, a feature of the wrong SQL version)
at the right place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pos:
    """A 1-based line and column plus the 0-based character span in the source."""

    line: int
    column: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant: number, string, boolean or null."""

    pos: Pos
    value: object


@dataclass(frozen=True, slots=True)
class Field:
    """A bare identifier: a key of the current document."""

    pos: Pos
    name: str


@dataclass(frozen=True, slots=True)
class Variable:
    """``@name``, a variable defined by the SET clause."""

    pos: Pos
    name: str


@dataclass(frozen=True, slots=True)
class Payload:
    """``*``: the whole current document."""

    pos: Pos


@dataclass(frozen=True, slots=True)
class Member:
    """``obj.name``."""

    pos: Pos
    obj: Expr
    name: str


@dataclass(frozen=True, slots=True)
class Index:
    """``obj[index]``."""

    pos: Pos
    obj: Expr
    index: Expr


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; ``name`` is lower-cased (function names are case-insensitive)."""

    pos: Pos
    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Cast:
    """``cast(expr AS type)``; ``type_name`` is lower-cased."""

    pos: Pos
    expr: Expr
    type_name: str


@dataclass(frozen=True, slots=True)
class Unary:
    """Unary ``-`` or ``+``."""

    pos: Pos
    op: str
    operand: Expr


@dataclass(frozen=True, slots=True)
class Binary:
    """An arithmetic (``+ - * / %``) or comparison (``= <> < <= > >=``) operator."""

    pos: Pos
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class And:
    """``left AND right``."""

    pos: Pos
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Or:
    """``left OR right``."""

    pos: Pos
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Not:
    """``NOT operand``."""

    pos: Pos
    operand: Expr


@dataclass(frozen=True, slots=True)
class In:
    """``left IN right`` where ``right`` should be an array."""

    pos: Pos
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Case:
    """``CASE subject WHEN t THEN r ... [ELSE default] END``."""

    pos: Pos
    subject: Expr
    whens: tuple[tuple[Expr, Expr], ...]
    default: Expr | None


@dataclass(frozen=True, slots=True)
class ObjectLit:
    """``{'key': expr, ...}``."""

    pos: Pos
    pairs: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True, slots=True)
class ArrayLit:
    """``[expr, ...]``."""

    pos: Pos
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class SelectItem:
    """One projection: ``expr [AS a.b.c]``; ``text`` is the expression's source."""

    pos: Pos
    expr: Expr
    alias: tuple[str, ...] | None
    text: str


@dataclass(frozen=True, slots=True)
class Select:
    """``SELECT VALUE expr`` (``value`` set) or ``SELECT item, ...`` (``items`` set)."""

    pos: Pos
    value: Expr | None
    items: tuple[SelectItem, ...]


@dataclass(frozen=True, slots=True)
class Subquery:
    """A nested object query: ``(SELECT ... FROM source [AS alias] [WHERE cond])``."""

    pos: Pos
    select: Select
    source: Expr
    alias: str | None
    where: Expr | None


@dataclass(frozen=True, slots=True)
class Statement:
    """A whole rule."""

    sets: tuple[tuple[str, Expr], ...]
    select: Select
    topic: str
    topic_pos: Pos
    where: Expr | None


Expr = (
    Literal
    | Field
    | Variable
    | Payload
    | Member
    | Index
    | Call
    | Cast
    | Unary
    | Binary
    | And
    | Or
    | Not
    | In
    | Case
    | ObjectLit
    | ArrayLit
    | Subquery
)
