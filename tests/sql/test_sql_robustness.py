"""Evaluation and compilation never leak exceptions: regressions and fuzzing.

The contract: ``Rule.evaluate`` and ``Template.render`` raise nothing but
``SqlEvalError`` (and in practice give Undefined for bad values, as AWS does);
``compile_rule`` and ``compile_template`` raise nothing but ``SqlError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulebus.errors import SqlError, SqlEvalError
from rulebus.sql import NO_MATCH, EvalContext, compile_rule, compile_template
from rulebus.sql import compiler as compiler_module
from rulebus.sql.functions import FUNCTIONS
from rulebus.sql.functions.regexp import risky
from rulebus.sql.types import UNDEFINED

from .helpers import CTX, value


def nested_list(depth: int) -> Any:
    """``[[[...1...]]]``, built without recursion."""
    out: Any = 1
    for _ in range(depth):
        out = [out]
    return out


def nested_object(depth: int) -> Any:
    """``{"k": {"k": ...}}``, built without recursion."""
    out: Any = 1
    for _ in range(depth):
        out = {"k": out}
    return out


DEEP = nested_list(3000)
HUGE_INT = 10**400

# (expression, payload, expected value): every leak found by the audit.
EVAL_REGRESSIONS: list[tuple[str, dict[str, Any], Any]] = [
    # decimal.InvalidOperation from quantize in a 28-digit context.
    ("trunc(a, 2)", {"a": 1e308}, 10**308),
    ("trunc(a, 34)", {"a": -1e308}, -(10**308)),
    ("trunc(a, 34)", {"a": 5e-324}, 0),
    ("trunc(a, 2)", {"a": 1.239}, 1.23),
    # float(int) overflow: OverflowError from huge Ints in Decimal contexts.
    ("a + 0.5", {"a": HUGE_INT}, UNDEFINED),
    ("power(a, 2)", {"a": HUGE_INT}, UNDEFINED),
    ("sqrt(a)", {"a": HUGE_INT}, UNDEFINED),
    ("sin(a)", {"a": HUGE_INT}, UNDEFINED),
    ("mod(a, 0.5)", {"a": HUGE_INT}, UNDEFINED),
    ("cast(a AS Decimal)", {"a": HUGE_INT}, UNDEFINED),
    ("cast(a AS Double)", {"a": HUGE_INT}, UNDEFINED),
    ("'5' - a", {"a": HUGE_INT}, UNDEFINED),
    # Decimal results beyond a double, and non-finite inputs (json.loads accepts them).
    ("a * 10", {"a": 1e308}, UNDEFINED),
    ("a - a * 2", {"a": -1e308}, UNDEFINED),
    ("a % b", {"a": 1e308, "b": 5e-324}, UNDEFINED),
    ("exp(a)", {"a": 1e308}, UNDEFINED),
    ("cosh(a)", {"a": 1e308}, UNDEFINED),
    ("abs(a)", {"a": math.inf}, UNDEFINED),
    ("a + 1", {"a": math.nan}, UNDEFINED),
    ("cast(a AS Decimal)", {"a": math.inf}, UNDEFINED),
    ("log(a)", {"a": math.inf}, UNDEFINED),
    ("nanvl(a, 7)", {"a": math.nan}, 7),
    # Domain errors stay Undefined.
    ("log(0)", {}, UNDEFINED),
    ("ln(-1)", {}, UNDEFINED),
    ("sqrt(-1)", {}, UNDEFINED),
    ("power(0, -1)", {}, UNDEFINED),
    ("power(-8, 0.5)", {}, UNDEFINED),
    ("power(10, 400)", {}, UNDEFINED),
    ("mod(5, 0)", {}, UNDEFINED),
    ("5 / 0", {}, UNDEFINED),
    # Ints are unbounded up to 4300 digits (what Python turns into text).
    ("a * a", {"a": 10**2200}, UNDEFINED),
    ("a * 10", {"a": 2**70}, 2**70 * 10),
    ("a + 1", {"a": 10**4300 - 1}, UNDEFINED),
    ("mod(a, 3)", {"a": 2**70}, 2**70 % 3),
    ("cast(a AS String)", {"a": 10**4300}, UNDEFINED),
    ("upper(a)", {"a": 10**4300}, UNDEFINED),
    ("bitand(a, b)", {"a": 2**70, "b": 2**70 + 1}, 2**70),
    ("bitxor(a, a)", {"a": 10**4000}, 0),
    ("bitnot(a)", {"a": 1e308}, ~int(1e308)),
    ("chr(a)", {"a": 2**70}, UNDEFINED),
    ("chr(a)", {"a": -1e308}, UNDEFINED),
    # int() of a numeric string over 4300 digits raised ValueError.
    ("a > 1", {"a": "1" * 5000}, UNDEFINED),
    ("round(a)", {"a": "1" * 5000}, UNDEFINED),
    ("a - 1", {"a": "9" * 5000}, UNDEFINED),
    ("topic(a)", {"a": "1" * 5000}, UNDEFINED),
    ("a > 1", {"a": "1e999"}, True),
    # Odd substring indexes.
    ("substring('abc', a, b)", {"a": 1e308, "b": -1e308}, ""),
    ("substring('abc', a)", {"a": -(2**70)}, "abc"),
    ("substring('abc', 2, 1)", {}, ""),
    # Deep values: RecursionError from to_json and from recursive equality.
    ("upper(a)", {"a": DEEP}, UNDEFINED),
    ("md5(a)", {"a": DEEP}, UNDEFINED),
    ("length(a)", {"a": nested_object(3000)}, UNDEFINED),
    ("regexp_matches(a, 'x')", {"a": DEEP}, UNDEFINED),
    ("cast(a AS String)", {"a": DEEP}, UNDEFINED),
    ("a + 'x'", {"a": DEEP}, UNDEFINED),
    ("a = b", {"a": DEEP, "b": nested_list(3000)}, True),
    ("a <> b", {"a": DEEP, "b": nested_list(2999)}, True),
    ("a IN [b]", {"a": DEEP, "b": nested_list(3000)}, True),
    ("get(a, 0)", {"a": DEEP}, DEEP[0]),
    # Lone surrogates (JSON "\ud800") cannot be encoded as UTF-8: "?" as in Java.
    ("md5(a)", {"a": "\ud800"}, hashlib.md5(b"?").hexdigest()),
    ("numbytes(a)", {"a": "x\udfff"}, 2),
    ("encode(a, 'base64')", {"a": "\ud800"}, "Pw=="),
    # Regular expressions given at run time.
    ("regexp_matches(s, p)", {"s": "a" * 40 + "!", "p": "(a+)+$"}, UNDEFINED),
    ("regexp_matches(s, p)", {"s": "a" * 40 + "!", "p": "(a|aa)*$"}, UNDEFINED),
    ("regexp_substr(s, p)", {"s": "abc", "p": "(a)\\1"}, UNDEFINED),
    ("regexp_matches(s, p)", {"s": "abc", "p": "["}, UNDEFINED),
    ("regexp_matches(s, p)", {"s": "abc", "p": "(" * 1000 + ")" * 1000}, UNDEFINED),
    ("regexp_matches(s, p)", {"s": "abc", "p": "b+c"}, True),
    ("regexp_replace(s, p, 'x')", {"s": "abc", "p": "[ab]"}, "xxc"),
    ("regexp_replace(s, '', r)", {"s": "x" * 10_000, "r": "y" * 1000}, UNDEFINED),
    ("regexp_replace('abc', '(b)', '$2')", {}, UNDEFINED),
    # Results that would grow without bound.
    ("replace(s, '', r)", {"s": "x" * 10_000, "r": "y" * 1000}, UNDEFINED),
    ("replace(s, 'x', 'yy')", {"s": "x" * 3_000_000}, UNDEFINED),
    ("concat(s, s)", {"s": "x" * 3_000_000}, UNDEFINED),
    ("s + s", {"s": "x" * 3_000_000}, UNDEFINED),
    ("length(lpad('a', a))", {"a": 2**70}, 1001),
    # Invalid base64 is Null, as documented; deep JSON inside it is Undefined.
    ("decode(a, 'base64')", {"a": "!!!"}, None),
    ("decode(a, 'base64')", {"a": "\ud800"}, None),
    # Bad times and zones at run time.
    ("parse_time('yyyy', a)", {"a": 10**30}, UNDEFINED),
    ("parse_time('yyyy', a)", {"a": 1e308}, UNDEFINED),
    ("parse_time('yyyy', 0, z)", {"z": "America"}, UNDEFINED),
    ("parse_time('yyyy', 0, z)", {"z": "../../etc/passwd"}, UNDEFINED),
    ("parse_time('yyyy', 0, z)", {"z": "+99:00"}, UNDEFINED),
    ("parse_time('yyyy', 0, z)", {"z": "\x00"}, UNDEFINED),
    ("parse_time(p, 0)", {"p": "q"}, UNDEFINED),
    ("time_to_epoch('+99:00', 'ZZ')", {}, UNDEFINED),
    ("time_to_epoch('2020 +25:00', 'yyyy ZZ')", {}, UNDEFINED),
    ("time_to_epoch(t, p)", {"t": "1", "p": "y" * 100_000}, UNDEFINED),
]


@pytest.mark.parametrize(("expr", "payload", "expected"), EVAL_REGRESSIONS)
def test_pathological_values_give_undefined_not_exceptions(
    expr: str, payload: dict[str, Any], expected: Any
) -> None:
    """Every leak found by the audit now follows AWS semantics (mostly Undefined)."""
    result = value(expr, payload)
    if isinstance(expected, float):
        assert result == pytest.approx(expected)
    else:
        assert result == expected
        assert type(result) is type(expected)


def test_the_reported_trunc_rule() -> None:
    """The rule from the review: trunc of 1e308 raised decimal.InvalidOperation."""
    rule = compile_rule("SELECT id, trunc(price, 2) AS p FROM 'event/+'")
    out = rule.evaluate({"id": "x", "price": 1e308}, EvalContext(topic="event/a"))
    assert out == {"id": "x", "p": 10**308}


def test_catastrophic_literal_input_with_runtime_pattern_returns_quickly() -> None:
    """A backtracking pattern from the payload is refused before it runs."""
    start = time.perf_counter()
    assert value("regexp_replace(s, p, 'x')", {"s": "a" * 5000 + "!", "p": "(a*)*$"}) is UNDEFINED
    assert time.perf_counter() - start < 1


def test_literal_patterns_are_trusted() -> None:
    """A pattern written in the rule runs even if it has nested repetition."""
    assert value("regexp_substr(s, '(a+,)+')", {"s": "xa,aa,y"}) == "a,aa,"


@pytest.mark.parametrize(
    ("pattern", "is_risky"),
    [
        ("(a+)+$", True),
        ("(a|a)*b", True),
        ("(?:a+)+", True),
        ("(a?)+", True),
        ("(a{2,})*", True),
        ("(x)\\1", True),
        ("(?P<n>x)(?P=n)", True),
        ("x" * 1001, True),
        ("a+b*c", False),
        ("(ab){3}", False),
        ("(?:ab)+", False),
        ("[(a+)]+", False),
        ("^\\w+@\\w+\\.com$", False),
        ("x*?y+?", False),
    ],
)
def test_risky_pattern_scan(pattern: str, is_risky: bool) -> None:
    """The scan refuses repeated groups that repeat or alternate, and backreferences."""
    assert risky(pattern) is is_risky


def test_select_star_and_templates_with_deep_payloads() -> None:
    """SELECT * and nested queries pass deep values through; templates render ""."""
    payload = {"a": DEEP, "b": nested_object(3000)}
    assert compile_rule("SELECT * FROM '#'").evaluate(payload, CTX) is payload
    out = compile_rule("SELECT *, 1 AS one FROM '#'").evaluate(payload, CTX)
    assert out == {**payload, "one": 1}
    rule = compile_rule("SELECT (SELECT k FROM b) AS x, encode(*, 'base64') AS e FROM '#'")
    assert rule.evaluate(payload, CTX) == {"x": {"k": payload["b"]["k"]}}
    template = compile_template("${a}|${b}|${encode(*, 'base64')}|${a = a}")
    assert template.render(payload, CTX) == "|||true"


def test_templates_with_huge_numbers() -> None:
    """A number with no string form renders as the empty string."""
    assert compile_template("<${a}>").render({"a": 10**5000}, CTX) == "<>"


def test_an_unexpected_operator_failure_is_a_one_line_sql_eval_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety net: anything still escaping becomes SqlEvalError, on one line."""
    rule = compile_rule("SELECT a + b AS c FROM '#'")
    template = compile_template("${a + b}")

    def broken(op: str, a: Any, b: Any) -> Any:
        raise ZeroDivisionError("boom\nsecond line")

    monkeypatch.setattr(compiler_module, "arithmetic", broken)
    with pytest.raises(SqlEvalError, match="rule evaluation failed: ZeroDivisionError: boom") as e:
        rule.evaluate({"a": 1, "b": 2}, CTX)
    assert "\n" not in str(e.value)
    with pytest.raises(SqlEvalError, match="template evaluation failed"):
        template.render({"a": 1, "b": 2}, CTX)


def test_an_unexpected_function_failure_is_undefined(monkeypatch: pytest.MonkeyPatch) -> None:
    """A function that raises is Undefined, as AWS answers for arguments it cannot use."""

    def broken(value: Any) -> Any:
        raise MemoryError

    monkeypatch.setitem(FUNCTIONS, "upper", FUNCTIONS["upper"].__class__("upper", broken, 1, 1))
    rule = compile_rule("SELECT upper(a) AS u, a FROM '#'")
    assert rule.evaluate({"a": "x"}, CTX) == {"a": "x"}
    assert compile_rule("SELECT upper('x') AS u FROM '#'").evaluate({}, CTX) == {}


# Compilation.
def _terms(joiner: str, count: int, term: str = "x") -> str:
    return joiner.join([term] * count)


def _with_from(sql: str) -> str:
    """``SELECT VALUE expr`` tables leave out the FROM clause."""
    return sql if " FROM '" in sql else sql + " FROM '#'"


COMPILE_OK: list[tuple[str, dict[str, Any], Any]] = [
    ("SELECT * FROM '#' WHERE " + _terms(" OR ", 499, "x = 2") + " OR x = 1", {"x": 1}, {"x": 1}),
    ("SELECT * FROM '#' WHERE " + _terms(" AND ", 500, "x = 1"), {"x": 1}, {"x": 1}),
    ("SELECT VALUE " + _terms(" + ", 500), {"x": 1}, 500),
    ("SELECT VALUE " + _terms(" + ", 500, "1"), {}, 500),
    ("SELECT VALUE " + _terms(" - ", 500, "x * 2"), {"x": 1}, -996),
    ("SELECT VALUE " + _terms(" OR ", 500, "x = 2") + " OR x = 1", {"x": 1}, True),
    ("SELECT VALUE " + _terms(" AND ", 500, "x = 1"), {"x": 1}, True),
    ("SELECT VALUE " + _terms(" AND ", 500, "y = 1"), {"x": 1}, UNDEFINED),
    ("SELECT VALUE " + "(" * 300 + "x + 1" + ")" * 300, {"x": 1}, 2),
    ("SELECT VALUE " + _terms(" + ", 300, "(x)"), {"x": 1}, 300),
    ("SELECT VALUE " + "abs(" * 90 + "x" + ")" * 90, {"x": -1}, 1),
    ("SELECT VALUE 1 + 2 + x * 10", {"x": 1e308}, UNDEFINED),
    ("SELECT VALUE trunc(1e308, 2)", {}, int(1e308)),  # the literal is an Int
    ("SELECT VALUE 1e999999", {}, math.inf),
    ("SELECT '" + "x" * 100_000 + "' AS s FROM '#'", {}, {"s": "x" * 100_000}),
    ("SELECT " + ", ".join(f"f{i}" for i in range(15_000)) + " FROM '#'", {"f1": 1}, {"f1": 1}),
    ("SELECT '€\U0001f600' AS s FROM 'é/+/\u4e2d'", {}, {"s": "€\U0001f600"}),
]


@pytest.mark.parametrize(("sql", "payload", "expected"), COMPILE_OK)
def test_long_flat_chains_and_texts_compile(sql: str, payload: Any, expected: Any) -> None:
    """Long OR/AND/arithmetic chains compile to loops; long texts and unicode are fine."""
    rule = compile_rule(_with_from(sql))
    if expected is UNDEFINED:
        assert rule.evaluate(payload, CTX) is NO_MATCH
    else:
        assert rule.evaluate(payload, CTX) == expected


COMPILE_ERRORS: list[tuple[str, str]] = [
    ("SELECT VALUE " + "(x + " * 300 + "x" + ")" * 300, "nested too deeply"),
    ("SELECT VALUE " + "abs(" * 300 + "x" + ")" * 300, "nested too deeply"),
    ("SELECT VALUE " + "-" * 300 + "x", "nested too deeply"),
    ("SELECT * FROM '#' WHERE " + "NOT " * 300 + "x", "nested too deeply"),
    ("SELECT VALUE " + "[" * 300 + "1" + "]" * 300, "nested too deeply"),
    ("SELECT VALUE " + "(SELECT VALUE " * 300 + "x" + " FROM y)" * 300, "nested too deeply"),
    ("SELECT VALUE " + ".".join(["x"] * 600), "nested too deeply"),
    ("SELECT VALUE " + "9" * 5000, "number literal is too long"),
    ("SELECT a\x00 FROM '#'", "unexpected character '\\x00'"),
    ("SELECT a FROM 'a\x00b'", "NUL"),
    ("SELECT ñ FROM '#'", "unexpected character 'ñ'"),
    ("SELECT \ud800 FROM '#'", "unexpected character"),
    ("SELECT * FROM '#' WHERE " + "x = 1 " * 20_000, "syntax error"),
]


@pytest.mark.parametrize(("sql", "message"), COMPILE_ERRORS)
def test_pathological_rules_are_one_line_sql_errors(sql: str, message: str) -> None:
    """Deep nesting, huge literals, NUL and odd characters are SqlErrors, never crashes."""
    with pytest.raises(SqlError) as caught:
        compile_rule(_with_from(sql))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "${" + "abs(" * 300 + "x" + ")" * 300 + "}",
        "${" + "9" * 5000 + "}",
        "${\x00}",
        "${" + "(x + " * 300 + "x" + ")" * 300 + "}",
    ],
)
def test_pathological_templates_are_sql_errors(text: str) -> None:
    """compile_template raises only one-line SqlErrors."""
    with pytest.raises(SqlError) as caught:
        compile_template(text)
    assert "\n" not in str(caught.value)


def test_template_with_long_chains() -> None:
    """Templates share the iterative chains."""
    assert compile_template("${" + _terms(" + ", 500) + "}").render({"x": 1}, CTX) == "500"


def test_nesting_at_the_limit_works_from_a_deep_stack() -> None:
    """Just under the limit compiles and evaluates even with 400 frames already in use."""

    def at_depth(n: int) -> Any:
        if n:
            return at_depth(n - 1)
        expr = "concat(" * 95 + "x" + ")" * 95
        return compile_rule(f"SELECT VALUE {expr} FROM '#' WHERE {expr} = '1'").evaluate(
            {"x": 1}, CTX
        )

    assert at_depth(400) == "1"


# Fuzzing.
EXTREME_NUMBERS = st.sampled_from(
    [
        1e308,
        -1e308,
        5e-324,
        -5e-324,
        1.7976931348623157e308,
        2**63,
        2**70,
        -(2**70),
        10**400,
        10**4299,
        0,
        -1,
        0.5,
        math.inf,
        -math.inf,
        math.nan,
    ]
)
EXTREME_STRINGS = st.sampled_from(
    [
        "",
        "1" * 5000,
        "9" * 400,
        "1e999",
        "-1e-999",
        "x" * 3000,
        "(a+)+$",
        "(a|aa)*$",
        "[",
        "a" * 30 + "!",
        "\ud800",
        "true",
        "yyyy-MM-dd'T'HH:mm:ss.SSSZ",
        "America/New_York",
        "America",
        "+99:99",
        "UTC+25",
        "eyJhIjoxfQ==",
        "!!!",
        "$1$2",
        "\x00",
    ]
)
SCALARS = (
    EXTREME_NUMBERS
    | st.integers()
    | st.floats()
    | EXTREME_STRINGS
    | st.text(max_size=20)
    | st.booleans()
    | st.none()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "k", "s"]), inner, max_size=4)
    ),
    max_leaves=12,
) | st.sampled_from([DEEP, nested_object(1500)])
FIELDS = ("a", "b", "c", "s", "p")
PAYLOADS = st.fixed_dictionaries({}, optional={name: VALUES for name in FIELDS})


def _fuzz_rules() -> list[Any]:
    """Every function with fields as arguments, plus every operator and clause."""
    selects: list[str] = []
    for name, function in sorted(FUNCTIONS.items()):
        high = function.max_args if function.max_args is not None else 4
        for count in range(function.min_args, min(high, 4) + 1):
            for shift in range(2):
                args = ", ".join(FIELDS[(i + shift) % len(FIELDS)] for i in range(count))
                selects.append(f"{name}({args})")
    selects.append("transform('enrichArray', a, b)")
    selects.append("encode(*, 'base64')")
    selects.append("regexp_replace(s, '(a+)', p)")
    for op in ("+", "-", "*", "/", "%", "=", "<>", "<", "<=", ">", ">=", "IN", "AND", "OR"):
        selects.append(f"a {op} b")
        selects.append(f"b {op} a + c")
    selects += ["-a", "NOT a", "a.k.a", "a[0]", "a[b]", "CASE a WHEN b THEN c ELSE s END"]
    selects += [f"cast(a AS {t})" for t in ("String", "Int", "Decimal", "Boolean")]
    selects += ["(SELECT a, k FROM a WHERE k > 0)", "{'x': a, 'y': [b, c]}", "a + b + c + s"]
    rules = []
    for start in range(0, len(selects), 8):
        chunk = selects[start : start + 8]
        items = ", ".join(f"{expr} AS r{i}" for i, expr in enumerate(chunk))
        where = " OR ".join(f"({expr}) = a" for expr in chunk[:3])
        rules.append(compile_rule(f"SELECT *, {items} FROM '#'"))
        rules.append(compile_rule(f"SELECT VALUE {chunk[0]} FROM '#' WHERE {where} OR a > b"))
    rules.append(compile_rule("SET @x = a * b, @y = @x + c SELECT @y AS y FROM '#'"))
    rules.append(compile_rule("SELECT a, b + c AS d FROM '#' WHERE a = 'x'", "2015-10-08"))
    return rules


FUZZ_RULES = _fuzz_rules()
FUZZ_TEMPLATES = [
    compile_template("${a}/${b}/${c + s}/${upper(a)}/${topic(b)}/${parse_time(p, a, s)}"),
    compile_template("${get(a, b)}-${concat(a, b, c)}-${a = b}-${regexp_substr(s, p)}"),
]


def test_fuzz_rules_cover_every_function() -> None:
    """The fuzzed rules call every built-in function."""
    text = " ".join(rule.text for rule in FUZZ_RULES)
    assert all(f"{name}(" in text for name in FUNCTIONS)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(PAYLOADS)
def test_fuzz_evaluation_raises_nothing_but_sql_eval_error(payload: dict[str, Any]) -> None:
    """Random payloads with extreme values never make a rule raise another exception."""
    ctx = EvalContext(topic="a/b/c", timestamp=0)
    for rule in FUZZ_RULES:
        with contextlib.suppress(SqlEvalError):
            rule.evaluate(payload, ctx)
    for template in FUZZ_TEMPLATES:
        with contextlib.suppress(SqlEvalError):
            assert type(template.render(payload, ctx)) is str


SQL_TOKENS = st.sampled_from(
    [
        "SELECT", "VALUE", "FROM", "WHERE", "SET", "AS", "AND", "OR", "NOT", "IN", "CASE",
        "WHEN", "THEN", "ELSE", "END", "true", "NULL", "*", ",", ".", "(", ")", "[", "]",
        "{", "}", ":", "=", "<>", "<", ">=", "+", "-", "–", "/", "%", "@v", "a", "b.c",
        "'#'", "'a/+'", '"x"', "'\\u12'", "'\\", "1", "2.5", "5E-12", "9" * 5000, "1e999",
        "upper", "abs(", "cast(", "concat(", "trunc(", "regexp_matches(", "lenght(",
        "aws_lambda(", "\x00", "\ud800", "é", "\n", "${", "}}", "'", '"',
    ]
)  # fmt: skip
SQL_TEXT = st.lists(SQL_TOKENS, max_size=40).map(" ".join) | st.text(max_size=80)


@settings(max_examples=300, deadline=None)
@given(SQL_TEXT)
def test_fuzz_compile_raises_nothing_but_sql_error(text: str) -> None:
    """Random rule text either compiles or raises a one-line SqlError."""
    for sql in (text, f"SELECT {text} FROM '#'", f"SELECT * FROM '#' WHERE {text}"):
        try:
            compile_rule(sql)
        except SqlError as err:
            assert "\n" not in str(err)
    try:
        compile_template(text)
        compile_template("${" + text + "}")
    except SqlError as err:
        assert "\n" not in str(err)
