"""``rulebus sql eval``: try a rule on one event, like the SQL tester of the AWS console."""

from __future__ import annotations

import json
import sys

import click

from rulebus.errors import BadInput, SqlError, SqlEvalError
from rulebus.sql import NO_MATCH, EvalContext, compile_rule, validate_topic
from rulebus.sql.types import to_json_value


def _fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


@click.group()
def sql() -> None:
    """Work with rules SQL."""


@sql.command("eval")
@click.option("--sql", "text", required=True, help="The rule, e.g. \"SELECT * FROM 'a/+'\".")
@click.option("--topic", required=True, help="The topic the event is published to.")
@click.option("--payload", required=True, help="The event payload, as JSON.")
@click.option("--sql-version", default=None, help="2015-10-08 or 2016-03-23 (the default).")
def eval_command(text: str, topic: str, payload: str, sql_version: str | None) -> None:
    """Evaluate a rule on one event.

    Prints the output as JSON and exits 0 if the rule fires; prints "no match" on
    stderr and exits 1 if the topic does not match or WHERE is not true; prints a
    one-line error and exits 2 for an invalid rule, topic or payload.
    """
    try:
        rule = compile_rule(text, sql_version)
        validate_topic(topic)
        document = json.loads(payload)
    except (SqlError, BadInput) as err:
        _fail(f"error: {err}", 2)
    except ValueError as err:
        _fail(f"error: --payload is not valid JSON: {err}", 2)
    if not rule.topic_filter.matches(topic):
        _fail("no match", 1)
    try:
        output = rule.evaluate(document, EvalContext(topic=topic))
    except SqlEvalError as err:
        _fail(f"error: {err}", 2)
    if output is NO_MATCH:
        _fail("no match", 1)
    click.echo(json.dumps(to_json_value(output), ensure_ascii=False))
