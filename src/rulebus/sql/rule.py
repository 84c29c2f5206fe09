"""A compiled rule: its topic filter and one closure from payload to output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rulebus.errors import SqlError, SqlEvalError
from rulebus.sql.compiler import Compiler
from rulebus.sql.context import NO_MATCH, EvalContext
from rulebus.sql.parser import parse_statement
from rulebus.sql.select import compile_select
from rulebus.sql.topics import TopicFilter
from rulebus.sql.types import UNDEFINED
from rulebus.sql.versions import DEFAULT_SQL_VERSION, SQL_VERSIONS, V2015


class Rule:
    """A rule compiled once; :meth:`evaluate` runs it against a decoded payload."""

    __slots__ = ("_run", "sql_version", "text", "topic_filter")

    def __init__(
        self,
        text: str,
        sql_version: str,
        topic_filter: TopicFilter,
        run: Callable[[Any, EvalContext], Any],
    ) -> None:
        self.text = text
        self.sql_version = sql_version
        self.topic_filter = topic_filter
        self._run = run

    def evaluate(self, payload: object, ctx: EvalContext) -> object:
        """The rule's output for ``payload``, or :data:`NO_MATCH` if it does not fire.

        The topic is not checked here (the router matches :attr:`topic_filter`).
        ``payload`` is never modified; ``SELECT *`` alone returns it unchanged.
        Raises only :class:`~rulebus.errors.SqlEvalError`, for a failure that has no
        Undefined answer in AWS terms (none is known: this is a safety net).
        """
        try:
            return self._run(payload, ctx)
        except Exception as err:
            raise eval_error("rule", err) from err

    def __repr__(self) -> str:
        return f"Rule({self.text!r}, sql_version={self.sql_version!r})"


def eval_error(what: str, err: Exception) -> SqlEvalError:
    """A one-line :class:`SqlEvalError` for an exception that escaped evaluation."""
    if isinstance(err, SqlEvalError):
        return err
    if isinstance(err, RecursionError):
        detail = "a value is nested too deeply"
    else:
        detail = f"{type(err).__name__}: {err}"
    detail = " ".join(detail.split())
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return SqlEvalError(f"{what} evaluation failed: {detail}")


def compile_error(text: str, err: Exception) -> SqlError:
    """A one-line :class:`SqlError` for an unexpected exception while compiling."""
    if isinstance(err, RecursionError):
        return SqlError("expression is nested too deeply", text=text)
    detail = " ".join(f"{type(err).__name__}: {err}".split())
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return SqlError(f"cannot compile: {detail}", text=text)


def compile_rule(text: str, sql_version: str | None = None) -> Rule:
    """Parse and compile a rule; raises only :class:`~rulebus.errors.SqlError`.

    ``sql_version`` is ``"2015-10-08"`` or ``"2016-03-23"`` (the default).
    """
    if type(text) is not str:
        raise SqlError(f"a rule must be text, not {type(text).__name__}")
    try:
        return _compile_rule(text, sql_version)
    except SqlError:
        raise
    except Exception as err:
        raise compile_error(text, err) from None


def _compile_rule(text: str, sql_version: str | None) -> Rule:
    version = DEFAULT_SQL_VERSION if sql_version is None else sql_version
    if version not in SQL_VERSIONS:
        raise SqlError(
            f"unknown SQL version {version!r}; use one of {', '.join(SQL_VERSIONS)}", text=text
        )
    statement = parse_statement(text)
    try:
        topic_filter = TopicFilter(statement.topic)
    except SqlError as err:
        pos = statement.topic_pos
        raise SqlError(err.message, text=text, line=pos.line, column=pos.column) from None

    compiler = Compiler(text, version)
    sets = []
    for name, expr in statement.sets:
        sets.append((name, compiler.expr(expr).fn))
        compiler.variables = compiler.variables | {name}
    where = compiler.predicate(statement.where) if statement.where is not None else None
    project = compile_select(compiler, statement.select)
    is_value = statement.select.value is not None
    arrays_allowed = version != V2015
    set_steps = tuple(sets)

    def run(payload: Any, ctx: EvalContext) -> Any:
        variables: dict[str, Any] | None = None
        if set_steps:
            variables = {}
            for name, get in set_steps:
                variables[name] = get(payload, ctx, variables)
        if where is not None and not where(payload, ctx, variables):
            return NO_MATCH
        output = project(payload, ctx, variables)
        if is_value and (output is UNDEFINED or (type(output) is list and not arrays_allowed)):
            return NO_MATCH
        return output

    if not set_steps and not is_value:
        # The hot shapes get a closure without the general bookkeeping.
        if where is None:

            def run_plain(payload: Any, ctx: EvalContext) -> Any:
                return project(payload, ctx, None)

            return Rule(text, version, topic_filter, run_plain)

        def run_filtered(payload: Any, ctx: EvalContext) -> Any:
            if where(payload, ctx, None):
                return project(payload, ctx, None)
            return NO_MATCH

        return Rule(text, version, topic_filter, run_filtered)
    return Rule(text, version, topic_filter, run)
