"""Operators, precedence, conversions, Undefined, and the two SQL versions."""

from __future__ import annotations

from typing import Any

import pytest

from rulebus.errors import SqlError
from rulebus.sql import NO_MATCH, compile_rule
from rulebus.sql.types import UNDEFINED
from tests.sql.helpers import run, value

OPERATORS: list[tuple[str, Any]] = [
    # AND / OR / NOT accept Booleans and "true"/"false" strings.
    ("true AND true", True),
    ("true AND 'TRUE'", True),
    ("'false' OR true", True),
    ("NOT 'false'", True),
    ("NOT 5", UNDEFINED),
    ("1 AND true", UNDEFINED),
    ("false AND missing", False),
    ("true OR missing", True),
    ("true AND missing", UNDEFINED),
    # Ordering converts numeric strings; other strings are Undefined.
    ("5 > 3", True),
    ("'10' > 9", True),
    ("'10' > '9'", True),
    ("'a' < 'b'", UNDEFINED),
    ("2.5 >= 2", True),
    ("1 <= 1.0", True),
    ("true > 0", UNDEFINED),
    ("null < 1", UNDEFINED),
    # Equality: numbers by value, containers deeply, mismatched types unequal.
    ("1 = 1.0", True),
    ("'1' = 1", False),
    ("'a' = 'a'", True),
    ("[1, 2] = [1, 2]", True),
    ("[1, 2] = [2, 1]", False),
    ("{'a': 1, 'b': 2} = {'b': 2, 'a': 1}", True),
    ("null = null", True),
    ("null <> null", False),
    ("1 <> 'a'", True),
    ("missing = 1", UNDEFINED),
    ("missing <> 1", UNDEFINED),
    ("true = 1", False),
    # + concatenates when either side is a string.
    ("'a' + 'b'", "ab"),
    ("'a' + 1", "a1"),
    ("1 + 'a'", "1a"),
    ("'5' + 2", "52"),
    ("'a' + null", UNDEFINED),
    ("1 + 2", 3),
    ("1 + 2.5", 3.5),
    ("0.1 + 0.2", 0.3),
    ("true + 1", UNDEFINED),
    # - * / % on numbers and numeric strings.
    ("'10' - 4", 6),
    ("'x' - 4", UNDEFINED),
    ("7 / 2", 3),
    ("-7 / 2", -3),
    ("7.5 / 2.5", 3),
    ("7 / 2.5", 2.8),
    ("1 / 0", UNDEFINED),
    ("7 % 3", 1),
    ("-7 % 3", -1),
    ("7.5 % 2", 1.5),
    ("2 * 3", 6),
    ("'2' * '3'", 6),
    ("-'3'", -3),
    ("-(2)", -2),
    # IN looks for an equal element of an array.
    ("3 IN [1, 2, 3]", True),
    ("'3' IN [1, 2, 3]", False),
    ("{'a': 1} IN [{'a': 1}]", True),
    ("3 IN 'abc'", UNDEFINED),
    # Precedence: * before +, comparisons before NOT, NOT before AND before OR.
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("NOT 1 = 2", True),
    ("true OR false AND false", True),
    ("(true OR false) AND false", False),
    ("1 + 1 = 2 AND 3 > 2", True),
]


@pytest.mark.parametrize(("expr", "expected"), OPERATORS)
def test_operators(expr: str, expected: Any) -> None:
    """Each operator follows its AWS table, including conversions and Undefined."""
    result = value(expr)
    assert result == expected
    assert type(result) is type(expected)


def test_undefined_values_are_omitted_from_objects() -> None:
    """Projections and object literals drop Undefined values, keeping Null."""
    assert run("SELECT a, b, {'x': missing, 'y': null} AS o FROM 'x'", {"b": None}) == {
        "b": None,
        "o": {"y": None},
    }


def test_keywords_and_functions_are_case_insensitive() -> None:
    """Keywords and function names work in any case."""
    assert run("sElEcT VaLuE UPPER(a) FrOm 'x' wHeRe a = 'b' AnD NoT FALSE", {"a": "b"}) == "B"


VERSION_DIFFERENCES: list[tuple[str, Any, Any, Any]] = [
    # sql, payload, 2015-10-08 output, 2016-03-23 output
    ("SELECT VALUE 10.0 FROM 'x'", {}, 10.0, 10),
    ("SELECT x FROM 'x'", {"x": 10.0}, {"x": 10.0}, {"x": 10}),
    ("SELECT VALUE 7.5 - 2.5 FROM 'x'", {}, 5.0, 5),
    ("SELECT VALUE cast(1 AS Double) FROM 'x'", {}, 1.0, 1),
    ("SELECT VALUE sqrt(9) FROM 'x'", {}, 3.0, 3),
    ("SELECT VALUE arr FROM 'x'", {"arr": [1, 2]}, NO_MATCH, [1, 2]),
    # 10.0 is the Int 10 in 2016-03-23, so Int division applies: AWS's own warning.
    ("SELECT VALUE 7.0 / 2 FROM 'x'", {}, 3.5, 3),
    ("SELECT VALUE sql_version() FROM 'x'", {}, "2015-10-08", "2016-03-23"),
]


@pytest.mark.parametrize(("sql", "payload", "old", "new"), VERSION_DIFFERENCES)
def test_version_differences(sql: str, payload: Any, old: Any, new: Any) -> None:
    """Whole-number decimals and top-level arrays differ between the two versions."""
    v1 = run(sql, payload, version="2015-10-08")
    v2 = run(sql, payload, version="2016-03-23")
    assert (v1, type(v1)) == (old, type(old))
    assert (v2, type(v2)) == (new, type(new))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT {'a': 1} AS o FROM 'x'",
        "SELECT [1] AS a FROM 'x'",
        "SELECT (SELECT VALUE n FROM e) AS s FROM 'x'",
        "SELECT length('a') AS n FROM 'x'",
        "SELECT cast(1 AS Boolean) AS b FROM 'x'",
    ],
)
def test_2016_features_are_rejected_in_2015(sql: str) -> None:
    """Literals, nested queries, newer functions and casts need 2016-03-23."""
    compile_rule(sql, "2016-03-23")
    with pytest.raises(SqlError, match="2016-03-23"):
        compile_rule(sql, "2015-10-08")


def test_default_version_is_2016() -> None:
    """A rule without a version uses 2016-03-23."""
    assert compile_rule("SELECT * FROM 'x'").sql_version == "2016-03-23"


def test_unknown_version_is_an_error() -> None:
    """Only the two documented versions are accepted."""
    with pytest.raises(SqlError, match="unknown SQL version 'beta'"):
        compile_rule("SELECT * FROM 'x'", "beta")
