"""Helpers shared by the rules-SQL tests."""

from __future__ import annotations

from typing import Any

from rulebus.sql import NO_MATCH, EvalContext, compile_rule
from rulebus.sql.types import UNDEFINED

CTX = EvalContext(
    topic="things/myThings/thingOne",
    client_id="device-1",
    principal="alice",
    timestamp=1481825251155,
    trace_id="12345678-1234-1234-1234-123456789012",
)


def run(
    sql: str, payload: Any = None, *, version: str | None = None, ctx: EvalContext = CTX
) -> Any:
    """The output of ``sql`` on ``payload`` (an empty object by default)."""
    return compile_rule(sql, version).evaluate({} if payload is None else payload, ctx)


def value(expr: str, payload: Any = None, *, version: str | None = None) -> Any:
    """The value of one expression; Undefined when the rule produces nothing."""
    out = run(f"SELECT VALUE {expr} FROM '#'", payload, version=version)
    return UNDEFINED if out is NO_MATCH else out
