"""Functions of the event's envelope: ``topic``, ``clientid``, ``principal``, ``traceid``."""

from __future__ import annotations

import uuid
from typing import Any

from rulebus.sql.context import EvalContext
from rulebus.sql.functions import Function
from rulebus.sql.types import UNDEFINED, to_int_floor


def topic(ctx: EvalContext, level: Any = UNDEFINED) -> Any:
    """The whole topic, or its ``level``-th level counting from 1."""
    if level is UNDEFINED:
        return ctx.topic
    index = to_int_floor(level)
    levels = ctx.topic.split("/")
    if index is UNDEFINED or not 1 <= index <= len(levels):
        return UNDEFINED
    return levels[index - 1]


def clientid(ctx: EvalContext) -> str:
    """Who sent the event; "n/a" when unknown, as AWS answers for non-MQTT messages."""
    return ctx.client_id if ctx.client_id is not None else "n/a"


def principal(ctx: EvalContext) -> Any:
    """The authenticated caller that published the event, or Undefined."""
    return ctx.principal if ctx.principal is not None else UNDEFINED


def traceid(ctx: EvalContext) -> str:
    """The event's trace id, or a fresh UUID when the event has none."""
    return ctx.trace_id if ctx.trace_id is not None else str(uuid.uuid4())


FUNCTIONS = [
    Function("topic", topic, 0, 1, context=True),
    Function("clientid", clientid, 0, 0, context=True),
    Function("principal", principal, 0, 0, context=True),
    Function("traceid", traceid, 0, 0, context=True),
]
