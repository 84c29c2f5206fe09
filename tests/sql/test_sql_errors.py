"""Compile errors: positions, the offending token, a caret, and helpful hints."""

from __future__ import annotations

import pytest

from rulebus.errors import SqlError
from rulebus.sql import compile_rule

SYNTAX: list[tuple[str, str, int, int]] = [
    ("SELECT * FORM 'a'", "unexpected 'FORM'", 1, 10),
    ("SELECT * FROM a/b", "must be quoted", 1, 15),
    ("SELECT a FROM 'x' WHERE", "unexpected end of input; expected an expression", 1, 24),
    ("SELECT #", "unexpected character '#'", 1, 8),
    ("SELECT a,\n  b c\nFROM 'x'", "unexpected 'c'", 2, 5),
    ("SELECT upper(a AS b) FROM 'x'", "only valid in cast", 1, 8),
]


@pytest.mark.parametrize(("sql", "message", "line", "column"), SYNTAX)
def test_syntax_errors_have_positions(sql: str, message: str, line: int, column: int) -> None:
    """A syntax error names the offending token and carries its line and column."""
    with pytest.raises(SqlError) as caught:
        compile_rule(sql)
    err = caught.value
    assert message in err.message
    assert (err.line, err.column) == (line, column)
    assert "\n" not in str(err)


def test_excerpt_shows_a_caret_under_the_error() -> None:
    """excerpt() shows the source line with a caret under the offending column."""
    with pytest.raises(SqlError) as caught:
        compile_rule("SELECT * FORM 'a'")
    assert caught.value.excerpt() == "SELECT * FORM 'a'\n         ^"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT lenght(a) FROM 'x'", "unknown function 'lenght'; did you mean 'length'?"),
        ("SELECT uper(a) FROM 'x'", "did you mean 'upper'?"),
        ("SELECT qqqqq(a) FROM 'x'", "unknown function 'qqqqq'"),
        ("SELECT cast(a AS Float) FROM 'x'", "cannot cast to 'float'"),
        ("SELECT @v FROM 'x'", "unknown variable @v"),
    ],
)
def test_semantic_errors(sql: str, message: str) -> None:
    """Unknown functions suggest the closest name; unknown casts and variables are named."""
    with pytest.raises(SqlError, match=message.replace("(", r"\(").replace("?", r"\?")) as caught:
        compile_rule(sql)
    assert caught.value.line == 1 and caught.value.column == 8


def test_error_on_a_later_line_reports_that_line() -> None:
    """Positions count lines, so a loader can turn them into file positions."""
    with pytest.raises(SqlError) as caught:
        compile_rule("SELECT a\nFROM 'x'\nWHERE lenght(a) > 1")
    assert (caught.value.line, caught.value.column) == (3, 7)
    assert caught.value.excerpt() == "WHERE lenght(a) > 1\n      ^"
