"""Built-in functions, with the examples of the AWS IoT functions page."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from rulebus.errors import SqlError
from rulebus.sql import EvalContext, compile_rule
from rulebus.sql.types import UNDEFINED
from tests.sql.helpers import run, value

DOCUMENTED: list[tuple[str, Any]] = [
    # Math.
    ("abs(-5)", 5),
    ("abs('-5.123')", 5.123),
    ("abs(true)", UNDEFINED),
    ("acos(0)", 1.5707963267948966),
    ("asin(0)", 0),
    ("atan(0)", 0),
    ("atan2(1, 0)", 1.5707963267948966),
    ("acos(2)", UNDEFINED),
    ("ceil(1.2)", 2),
    ("ceil(-1.2)", -1),
    ("cos(0)", 1),
    ("cosh(2.3)", 5.037220649268761),
    ("exp(1)", math.e),
    ("floor(1.2)", 1),
    ("floor(-1.2)", -2),
    ("ln(2.718281828459045)", 1),
    ("log(100)", 2),
    ("mod(8, 3)", 2),
    ("remainder(8, 3)", 2),
    ("nanvl(8, 3)", 8),
    ("nanvl(missing, 3)", 3),
    ("power(2, 5)", 32),
    ("round(1.2)", 1),
    ("round(1.5)", 2),
    ("round(1.7)", 2),
    ("round(-1.1)", -1),
    ("round(-1.5)", -2),
    ("sign(-7)", -1),
    ("sign(0)", 0),
    ("sign(13)", 1),
    ("sin(0)", 0),
    ("sinh(2.3)", 4.936961805545957),
    ("sqrt(9)", 3),
    ("tan(3)", -0.1425465430742778),
    ("tanh(2.3)", 0.9800963962661914),
    ("trunc(2.3, 0)", 2),
    ("trunc(2.3123, 2)", 2.31),
    ("trunc(2.888, 2)", 2.88),
    ("trunc(2.00, 5)", 2),
    # Bitwise.
    ("bitand(13, 5)", 5),
    ("bitor(8, 5)", 13),
    ("bitxor(13, 5)", 8),
    ("bitand('13', 5.7)", 5),
    ("bitnot(13)", -14),
    # Strings.
    ("chr(65)", "A"),
    ("chr(49)", "1"),
    ("concat()", UNDEFINED),
    ("concat(1)", "1"),
    ("concat([1, 2, 3], 4)", [1, 2, 3, 4]),
    ("concat([1, 2, 3], 'hello')", [1, 2, 3, "hello"]),
    ("concat('con', 'cat')", "concat"),
    ("concat(1, 'hello')", "1hello"),
    ("concat('he','is','man')", "heisman"),
    ("concat([1, 2, 3], 'hello', [4, 5, 6])", [1, 2, 3, "hello", 4, 5, 6]),
    ("endswith('cat','at')", True),
    ("endswith(null,'at')", UNDEFINED),
    ("startswith('ranger','ran')", True),
    ("indexof('abcd', 'bc')", 1),
    ("length('hi')", 2),
    ("length(false)", 5),
    ("lower('HELLO')", "hello"),
    ("lower(['HELLO'])", '["hello"]'),
    ("upper('hello')", "HELLO"),
    ("upper(['hello'])", '["HELLO"]'),
    ("lpad('hello', 2)", "  hello"),
    ("lpad(1, 3)", "   1"),
    ("rpad('hello', 2)", "hello  "),
    ("rpad(1, 3)", "1   "),
    ("ltrim(' h i ')", "h i "),
    ("rtrim(' h i ')", " h i"),
    ("trim(' hi ')", "hi"),
    ("numbytes('hi')", 2),
    ("numbytes('€')", 3),
    ("replace('abcd', 'bc', 'x')", "axd"),
    ("replace('abcdabcd', 'b', 'x')", "axcdaxcd"),
    ("substring('012345', 0)", "012345"),
    ("substring('012345', 2)", "2345"),
    ("substring('012345', 2.745)", "2345"),
    ("substring(123, 2)", "3"),
    ("substring('012345', -1)", "012345"),
    ("substring(true, 1.2)", "rue"),
    ("substring(false, -2.411E247)", "false"),
    ("substring('012345', 1, 3)", "12"),
    ("substring('012345', -50, 50)", "012345"),
    ("substring('012345', 3, 1)", ""),
    # Regular expressions.
    ("regexp_matches('aaaa', 'a{2,}')", True),
    ("regexp_matches('aaaa', 'b')", False),
    ("regexp_matches('a', '(')", UNDEFINED),
    ("regexp_replace('abcd', 'bc', 'x')", "axd"),
    ("regexp_replace('abcd', 'b(.*)d', '$1')", "ac"),
    ("regexp_substr('hihihello', 'hi')", "hi"),
    ("regexp_substr('hihihello', '(hi)*')", "hihi"),
    (r"regexp_matches('a1', '\d')", True),
    # Hashes and encodings.
    ("md2('hello')", "a9046c73e00331af68917d3804f70655"),
    ("md5('hello')", "5d41402abc4b2a76b9719d911017c592"),
    ("sha1('hello')", "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"),
    ("sha256('')", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ("encode('hello', 'base64')", "aGVsbG8="),
    ("decode('aGVsbG8=', 'base64')", "hello"),
    ("decode('!!', 'base64')", None),
    # Conversions and tests.
    ("cast(true as Int)", 1),
    ("cast('5.7' as Int)", 5),
    ("cast(5 as String)", "5"),
    ("cast([1, 'a'] as String)", '[1,"a"]'),
    ("cast(0 as Boolean)", False),
    ("cast('TRUE' as Bool)", True),
    ("cast('x' as Int)", UNDEFINED),
    ("cast(2.5 as Decimal)", 2.5),
    ("get(['a', 'b', 'c'], 1)", "b"),
    ("get({'a':'b'}, 'a')", "b"),
    ("get('abc', 1)", "b"),
    ("get([1], 5)", UNDEFINED),
    ("get_or_default(missing, 'd')", "d"),
    ("get_or_default(null, 'd')", "d"),
    ("get_or_default(1, 'd')", 1),
    ("isNull(5)", False),
    ("isNull(Null)", True),
    ("isUndefined(5)", False),
    ("isUndefined(floor([1,2,3]))", True),
    # Context and misc.
    ("sql_version()", "2016-03-23"),
    ("topic()", "things/myThings/thingOne"),
    ("topic(1)", "things"),
    ("topic(3)", "thingOne"),
    ("topic(4)", UNDEFINED),
    ("clientid()", "device-1"),
    ("principal()", "alice"),
    ("traceid()", "12345678-1234-1234-1234-123456789012"),
    ("timestamp()", 1481825251155),
    # Time.
    (
        'parse_time("yyyy.MM.dd G \'at\' HH:mm:ss z", 100000000, "America/Belize")',
        "1970.01.01 AD at 21:46:40 CST",
    ),
    ("parse_time('yyyy', 1481825251155, 'UTC')", "2016"),
    ("parse_time(\"yyyy-MM-dd'T'HH:mm:ss.SSSZZ\", 1481825251155)", "2016-12-15T18:07:31.155+00:00"),
    ("parse_time('EEEE d MMMM yy hh a', 0)", "Thursday 1 January 70 12 AM"),
    ("time_to_epoch('2020-04-03 09:45:18 UTC+01:00', 'yyyy-MM-dd HH:mm:ss VV')", 1585903518000),
    ("time_to_epoch('18 December 2015', 'dd MMMM yyyy')", 1450396800000),
    (
        "time_to_epoch('2007-12-03 10:15:30.592 America/Los_Angeles', 'yyyy-MM-dd HH:mm:ss.SSS z')",
        1196705730592,
    ),
    ("time_to_epoch('nonsense', 'yyyy')", UNDEFINED),
]


@pytest.mark.parametrize(("expr", "expected"), DOCUMENTED)
def test_documented_function_examples(expr: str, expected: Any) -> None:
    """Each documented function example returns the documented value (2016-03-23)."""
    result = value(expr)
    if type(expected) is float:
        assert result == pytest.approx(expected)
    else:
        assert result == expected
        assert type(result) is type(expected)


def test_random_functions_give_fresh_values() -> None:
    """newuuid() and rand() are evaluated per event, not folded at compile time."""
    rule = compile_rule("SELECT newuuid() AS id, rand() AS r FROM 'x'")
    ctx = EvalContext(topic="x")
    first, second = rule.evaluate({}, ctx), rule.evaluate({}, ctx)
    assert first["id"] != second["id"]  # type: ignore[index]
    assert re.fullmatch(r"[0-9a-f-]{36}", first["id"])  # type: ignore[index]
    assert 0 <= first["r"] < 1  # type: ignore[index]


def test_timestamp_defaults_to_now_and_traceid_to_a_uuid() -> None:
    """Without an ingest time or trace id, timestamp() is now and traceid() a new UUID."""
    out = compile_rule(
        "SELECT timestamp() AS t, traceid() AS id, clientid() AS c FROM 'x'"
    ).evaluate({}, EvalContext(topic="x"))
    assert abs(out["t"] - __import__("time").time() * 1000) < 60_000  # type: ignore[index]
    assert len(out["id"]) == 36  # type: ignore[index]
    assert out["c"] == "n/a"  # type: ignore[index]


def test_encode_star_encodes_the_whole_payload() -> None:
    """encode(*, 'base64') is the base64 of the payload's compact JSON."""
    assert run("SELECT encode(*, 'base64') AS data FROM 'x'", {"a": 1}) == {"data": "eyJhIjoxfQ=="}


@pytest.mark.parametrize(
    "name",
    [
        "aws_lambda",
        "get_dynamodb",
        "get_thing_shadow",
        "get_secret",
        "machinelearning_predict",
        "get_registry_data",
        "get_mqtt_property",
        "accountid",
    ],
)
def test_aws_service_functions_are_rejected(name: str) -> None:
    """Functions that need an AWS service fail to compile and say what to do instead."""
    with pytest.raises(SqlError, match=f"{name}\\(\\)") as caught:
        compile_rule(f"SELECT {name}('a', 'b') AS x FROM 'x'")
    assert caught.value.line == 1 and caught.value.column == 8


def test_aws_lambda_points_to_a_function_action() -> None:
    """The aws_lambda() rejection names the rulebus alternative."""
    with pytest.raises(SqlError, match="function action"):
        compile_rule("SELECT aws_lambda('arn', *) AS x FROM 'x'")


def test_get_dynamodb_points_to_a_function_action() -> None:
    """The get_dynamodb() rejection names the rulebus alternative, which exists."""
    with pytest.raises(SqlError, match="function action"):
        compile_rule("SELECT get_dynamodb('t', 'k', id, 'arn') AS x FROM 'x'")


def test_wrong_argument_count_is_a_compile_error() -> None:
    """Calling a function with the wrong number of arguments fails at compile time."""
    with pytest.raises(SqlError, match=r"substring\(\) takes 2 to 3 arguments"):
        compile_rule("SELECT substring('a') AS x FROM 'x'")
