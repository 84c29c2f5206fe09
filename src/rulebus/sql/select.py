"""The SELECT clause: from projections to the closure that builds an output document."""

from __future__ import annotations

from typing import Any

from rulebus.sql import ast
from rulebus.sql.compiler import Compiler, Fn
from rulebus.sql.types import UNDEFINED, whole_to_int
from rulebus.sql.versions import V2015


def output_name(item: ast.SelectItem) -> tuple[str, ...]:
    """The output key of a projection: its alias, a field's own name, else its source text."""
    if item.alias is not None:
        return item.alias
    expr = item.expr
    if isinstance(expr, ast.Field | ast.Member):
        return (expr.name,)
    return (item.text,)


def _put(out: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    # Inner objects are copied, never updated in place: after `SELECT *` they may
    # still belong to the caller's payload.
    for key in keys[:-1]:
        inner = out.get(key)
        inner = dict(inner) if type(inner) is dict else {}
        out[key] = inner
        out = inner
    out[keys[-1]] = value


def compile_select(compiler: Compiler, select: ast.Select, *, nested: bool = False) -> Fn:
    """A closure returning the output for one document, or Undefined for no output."""
    whole = compiler.version != V2015
    if select.value is not None:
        get_value = compiler.expr(select.value).fn
        if not whole:
            return get_value
        return lambda doc, ctx, variables: whole_to_int(get_value(doc, ctx, variables))

    star = False
    flat: list[tuple[str, Fn]] = []
    deep: list[tuple[tuple[str, ...], Fn]] = []
    steps: list[tuple[tuple[str, ...], Fn | None]] = []
    for item in select.items:
        if isinstance(item.expr, ast.Payload) and item.alias is None:
            star = True
            steps.append(((), None))
            continue
        keys = output_name(item)
        get = compiler.expr(item.expr).fn
        steps.append((keys, get))
        if len(keys) == 1:
            flat.append((keys[0], get))
        else:
            deep.append((keys, get))

    if star and len(steps) == 1:
        return lambda doc, ctx, variables: doc

    if not star and not deep:
        # The common shape: a list of projections to top-level keys.
        items = tuple(flat)

        def project(doc: Any, ctx: Any, variables: Any) -> Any:
            out = {}
            for key, get in items:
                value = get(doc, ctx, variables)
                if value is not UNDEFINED:
                    if type(value) is float and whole and value.is_integer():
                        value = int(value)
                    out[key] = value
            return out

        return project

    ordered = tuple(steps)

    def project_general(doc: Any, ctx: Any, variables: Any) -> Any:
        out: dict[str, Any] = {}
        for keys, get in ordered:
            if get is None:
                if type(doc) is dict:
                    out.update(doc)
                continue
            value = get(doc, ctx, variables)
            if value is UNDEFINED:
                continue
            if type(value) is float and whole and value.is_integer():
                value = int(value)
            if len(keys) == 1:
                out[keys[0]] = value
            else:
                _put(out, keys, value)
        return out

    return project_general
