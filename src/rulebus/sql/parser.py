"""Rule text → syntax tree (:mod:`rulebus.sql.ast`), with positioned syntax errors."""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from rulebus.errors import SqlError
from rulebus.sql import ast
from rulebus.sql.types import MAX_INT_DIGITS

_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "/": "/",
    "\\": "\\",
    "'": "'",
    '"': '"',
}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)

# How the anonymous punctuation terminals lark invents are shown in messages.
_PUNCTUATION = {
    "COMMA": "','",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "DOT": "'.'",
    "COLON": "':'",
    "EQUAL": "'='",
    "STAR": "'*'",
    "COMPARE": "a comparison",
    "ADD_OP": "'+'/'-'",
    "MUL_OP": "'/'/'%'",
    "NAME": "a name",
    "STRING": "a string",
    "NUMBER": "a number",
    "VARIABLE": "a @variable",
    "$END": "end of input",
}


@functools.cache
def _lark() -> Lark:
    grammar = resources.files("rulebus.sql").joinpath("grammar.lark").read_text("utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        start=["start", "expression"],
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _unquote(token: str) -> str:
    """Decode a quoted literal; unknown escapes such as ``\\d`` are kept verbatim for regexes."""

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if len(code) == 5:
            return chr(int(code[1:], 16))
        return _ESCAPES.get(code, match.group(0))

    return _ESCAPE.sub(replace, token[1:-1])


def _pos(meta: Any) -> ast.Pos:
    return ast.Pos(meta.line, meta.column, meta.start_pos, meta.end_pos)


def _tok_pos(token: Token) -> ast.Pos:
    return ast.Pos(token.line or 1, token.column or 1, token.start_pos or 0, token.end_pos or 0)


def _number(text: str) -> int | float:
    if "." in text or "e" in text or "E" in text:
        return float(text)
    return int(text)


@v_args(meta=True, inline=True)
class _ToAst(Transformer_NonRecursive[Token, Any]):
    """Builds :mod:`rulebus.sql.ast` nodes; ``text`` is kept to name unaliased projections."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    # Statement structure.
    def start(self, meta: Any, *parts: Any) -> ast.Statement:
        sets: tuple[tuple[str, ast.Expr], ...] = ()
        where = None
        select = topic = None
        for part in parts:
            if part is None:
                continue
            kind, value = part
            if kind == "set":
                sets = value
            elif kind == "select":
                select = value
            elif kind == "from":
                topic = value
            else:
                where = value
        assert select is not None and topic is not None
        return ast.Statement(sets, select, topic[0], topic[1], where)

    def expression(self, meta: Any, expr: ast.Expr) -> ast.Expr:
        return expr

    def set_clause(self, meta: Any, *assignments: tuple[str, ast.Expr]) -> tuple[str, Any]:
        return ("set", assignments)

    def assignment(self, meta: Any, name: Token, expr: ast.Expr) -> tuple[str, ast.Expr]:
        return (str(name)[1:], expr)

    def select_value(self, meta: Any, expr: ast.Expr) -> tuple[str, ast.Select]:
        return ("select", ast.Select(_pos(meta), expr, ()))

    def select_list(self, meta: Any, *items: ast.SelectItem) -> tuple[str, ast.Select]:
        return ("select", ast.Select(_pos(meta), None, items))

    def select_item(
        self, meta: Any, expr: ast.Expr, alias: tuple[str, ...] | None
    ) -> ast.SelectItem:
        pos = _pos(meta)
        text = self.text[expr.pos.start : expr.pos.end]
        return ast.SelectItem(pos, expr, alias, text)

    def alias(self, meta: Any, *names: Token) -> tuple[str, ...]:
        return tuple(str(n) for n in names)

    def from_clause(self, meta: Any, topic: Token) -> tuple[str, tuple[str, ast.Pos]]:
        return ("from", (_unquote(str(topic)), _tok_pos(topic)))

    def where_clause(self, meta: Any, expr: ast.Expr) -> tuple[str, ast.Expr]:
        return ("where", expr)

    # Expressions.
    def or_op(self, meta: Any, left: ast.Expr, right: ast.Expr) -> ast.Expr:
        return ast.Or(_pos(meta), left, right)

    def and_op(self, meta: Any, left: ast.Expr, right: ast.Expr) -> ast.Expr:
        return ast.And(_pos(meta), left, right)

    def not_op(self, meta: Any, operand: ast.Expr) -> ast.Expr:
        return ast.Not(_pos(meta), operand)

    def compare(self, meta: Any, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Expr:
        return ast.Binary(_pos(meta), str(op), left, right)

    def in_op(self, meta: Any, left: ast.Expr, right: ast.Expr) -> ast.Expr:
        return ast.In(_pos(meta), left, right)

    def arith(self, meta: Any, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Expr:
        return ast.Binary(_pos(meta), "-" if op == "–" else str(op), left, right)

    def unary_op(self, meta: Any, op: Token, operand: ast.Expr) -> ast.Expr:
        return ast.Unary(_pos(meta), "+" if op == "+" else "-", operand)

    def member(self, meta: Any, obj: ast.Expr, name: Token) -> ast.Expr:
        return ast.Member(_pos(meta), obj, str(name))

    def member_star(self, meta: Any, obj: ast.Expr, star: Token) -> ast.Expr:
        # `*.field` is `field`: `*` is the document itself.
        return obj

    def index(self, meta: Any, obj: ast.Expr, index: ast.Expr) -> ast.Expr:
        return ast.Index(_pos(meta), obj, index)

    def number(self, meta: Any, token: Token) -> ast.Expr:
        try:
            value = _number(str(token))
        except ValueError:
            raise SqlError(
                f"number literal is too long (more than {MAX_INT_DIGITS} digits)",
                text=self.text,
                line=meta.line,
                column=meta.column,
            ) from None
        return ast.Literal(_pos(meta), value)

    def string(self, meta: Any, token: Token) -> ast.Expr:
        return ast.Literal(_pos(meta), _unquote(str(token)))

    def true(self, meta: Any) -> ast.Expr:
        return ast.Literal(_pos(meta), True)

    def false(self, meta: Any) -> ast.Expr:
        return ast.Literal(_pos(meta), False)

    def null(self, meta: Any) -> ast.Expr:
        return ast.Literal(_pos(meta), None)

    def field(self, meta: Any, name: Token) -> ast.Expr:
        return ast.Field(_pos(meta), str(name))

    def variable(self, meta: Any, name: Token) -> ast.Expr:
        return ast.Variable(_pos(meta), str(name)[1:])

    def payload(self, meta: Any, star: Token) -> ast.Expr:
        return ast.Payload(_pos(meta))

    def call(self, meta: Any, name: Token, *args: ast.Expr | None) -> ast.Expr:
        return ast.Call(_pos(meta), str(name).lower(), tuple(a for a in args if a is not None))

    def cast(self, meta: Any, name: Token, expr: ast.Expr, type_name: Token) -> ast.Expr:
        if str(name).lower() != "cast":
            raise SqlError(
                f"'AS' inside a call is only valid in cast(value AS type), not in {name}()",
                text=self.text,
                line=meta.line,
                column=meta.column,
            )
        return ast.Cast(_pos(meta), expr, str(type_name).lower())

    def subquery(self, meta: Any, *parts: Any) -> ast.Expr:
        (_, select), source, alias, where = parts
        return ast.Subquery(
            _pos(meta), select, source, None if alias is None else str(alias), where
        )

    def case(self, meta: Any, subject: ast.Expr, *rest: Any) -> ast.Expr:
        *whens, default = rest
        return ast.Case(_pos(meta), subject, tuple(whens), default)

    def when(self, meta: Any, test: ast.Expr, result: ast.Expr) -> tuple[ast.Expr, ast.Expr]:
        return (test, result)

    def object(self, meta: Any, *pairs: tuple[str, ast.Expr] | None) -> ast.Expr:
        return ast.ObjectLit(_pos(meta), tuple(p for p in pairs if p is not None))

    def pair(self, meta: Any, key: Token, value: ast.Expr) -> tuple[str, ast.Expr]:
        name = _unquote(str(key)) if key.type == "STRING" else str(key)
        return (name, value)

    def array(self, meta: Any, *items: ast.Expr | None) -> ast.Expr:
        return ast.ArrayLit(_pos(meta), tuple(i for i in items if i is not None))


def _describe(terminal: str) -> str:
    if terminal in _PUNCTUATION:
        return _PUNCTUATION[terminal]
    return terminal.lstrip("_")


def _syntax_error(err: UnexpectedInput, text: str) -> SqlError:
    line, column = err.line, err.column
    if isinstance(err, UnexpectedToken):
        token = err.token
        if token.type == "$END":
            found = "end of input"
            lines = text.splitlines() or [""]
            line, column = len(lines), len(lines[-1]) + 1
        else:
            found = repr(str(token))
        # The LALR lookahead set is approximate after state merges; ask the parser
        # which terminals it really accepts here.
        accepts: set[str] = (
            err.interactive_parser.accepts()  # type: ignore[no-untyped-call]
            if err.interactive_parser
            else err.expected
        )
        expected = sorted(accepts, key=lambda t: (not t.startswith("_"), t))
        if expected == ["STRING"] and "FROM" in text[: token.start_pos or 0].upper():
            message = f"unexpected {found}: the FROM topic filter must be quoted, as in FROM 'a/b'"
        elif {"NAME", "NUMBER", "STRING"} <= set(expected):
            message = f"syntax error: unexpected {found}; expected an expression"
        else:
            shown = ", ".join(_describe(t) for t in expected[:8])
            more = ", ..." if len(expected) > 8 else ""
            message = f"syntax error: unexpected {found}; expected {shown}{more}"
    elif isinstance(err, UnexpectedCharacters):
        message = f"syntax error: unexpected character {err.char!r}"
    else:
        message = "syntax error"
    return SqlError(message, text=text, line=line, column=column)


def _parse(text: str, start: str) -> Any:
    try:
        tree = _lark().parse(text, start=start)
    except UnexpectedInput as err:
        raise _syntax_error(err, text) from None
    try:
        return _ToAst(text).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, SqlError):
            raise err.orig_exc from None
        raise SqlError(f"cannot read the rule: {err.orig_exc!r}"[:200], text=text) from None


def parse_statement(text: str) -> ast.Statement:
    """Parse a whole rule; raises :class:`~rulebus.errors.SqlError` with a position."""
    statement: ast.Statement = _parse(text, "start")
    return statement


def parse_expression(text: str) -> ast.Expr:
    """Parse a lone expression (the inside of a ``${...}`` template)."""
    expr: ast.Expr = _parse(text, "expression")
    return expr
