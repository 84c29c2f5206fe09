"""``${expr}`` substitution templates in action parameters.

As in AWS IoT, the expressions are evaluated against the rule's *input* payload,
not its SELECT output, so SELECT aliases are not visible here.
"""

from __future__ import annotations

from typing import Any

from rulebus.errors import SqlError
from rulebus.sql.compiler import Compiler, Fn
from rulebus.sql.context import EvalContext
from rulebus.sql.parser import parse_expression
from rulebus.sql.rule import compile_error, eval_error
from rulebus.sql.types import UNDEFINED, to_string
from rulebus.sql.versions import DEFAULT_SQL_VERSION


class Template:
    """A compiled template: literal text and expressions, rendered to a string."""

    __slots__ = ("_parts", "is_constant", "text")

    def __init__(self, text: str, parts: tuple[str | Fn, ...]) -> None:
        self.text = text
        self._parts = parts
        #: True when the template has no ``${...}``, so it renders to its own text.
        self.is_constant = all(type(p) is str for p in parts)

    def render(self, payload: object, ctx: EvalContext) -> str:
        """Substitute every ``${expr}``; Undefined becomes "" and Null "null"."""
        if self.is_constant:
            return self.text
        out = []
        try:
            for part in self._parts:
                if isinstance(part, str):
                    out.append(part)
                else:
                    out.append(_render_value(part(payload, ctx, None)))
        except Exception as err:
            raise eval_error("template", err) from err
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def _render_value(value: Any) -> str:
    if value is None:
        return "null"
    text = to_string(value)
    return "" if text is UNDEFINED else text


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    line = before.count("\n") + 1
    return line, offset - (before.rfind("\n") + 1) + 1


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` that closes the expression starting at ``start``, or -1."""
    depth, quote, i = 0, "", start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


def compile_template(text: str) -> Template:
    """Compile a substitution template; raises only :class:`~rulebus.errors.SqlError`."""
    if type(text) is not str:
        raise SqlError(f"a template must be text, not {type(text).__name__}")
    try:
        return _compile_template(text)
    except SqlError:
        raise
    except Exception as err:
        raise compile_error(text, err) from None


def _compile_template(text: str) -> Template:
    parts: list[str | Fn] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            if end < 0:
                line, column = _position(text, i)
                raise SqlError("unclosed '${' in template", text=text, line=line, column=column)
            source = text[i + 2 : end]
            if not source.strip():
                line, column = _position(text, i)
                raise SqlError("empty '${}' in template", text=text, line=line, column=column)
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_compile_expression(text, source, i + 2))
            i = end + 1
        else:
            literal.append(text[i])
            i += 1
    if literal:
        parts.append("".join(literal))
    return Template(text, tuple(parts))


def _compile_expression(template: str, source: str, offset: int) -> Fn:
    try:
        return Compiler(source, DEFAULT_SQL_VERSION).expr(parse_expression(source)).fn
    except SqlError as err:
        # Report the position in the whole template, not in the expression alone.
        line, column = None, None
        if err.line is not None:
            base_line, base_column = _position(template, offset)
            line = base_line + err.line - 1
            column = (err.column or 1) + (base_column - 1 if err.line == 1 else 0)
        raise SqlError(err.message, text=template, line=line, column=column) from None
