"""SELECT, FROM, WHERE and SET, with the examples of the AWS IoT SQL reference."""

from __future__ import annotations

from typing import Any

import pytest

from rulebus.errors import SqlError
from rulebus.sql import NO_MATCH, compile_rule
from tests.sql.helpers import CTX, run

COLOR = {"color": "red", "temperature": 50}
NESTED = {
    "e": [
        {"n": "temperature", "u": "Cel", "t": 1234, "v": 22.5},
        {"n": "light", "u": "lm", "t": 1235, "v": 135},
        {"n": "acidity", "u": "pH", "t": 1235, "v": 7},
    ]
}
TRANSFORM = {"attributes": {"data1": 1, "data2": 2}, "values": [{"a": 3}, {"b": 4}, {"c": 5}]}
DEVICE = {
    "deviceid": "iot123",
    "temp": 54.98,
    "humidity": 32.43,
    "coords": {"latitude": 47.615694, "longitude": -122.3359976},
}

DOC_EXAMPLES: list[tuple[str, Any, Any]] = [
    # SELECT clause page.
    ("SELECT * FROM 'a/b'", COLOR, COLOR),
    ("SELECT color FROM 'a/b'", COLOR, {"color": "red"}),
    ("SELECT color AS my_color FROM 'a/b'", COLOR, {"my_color": "red"}),
    (
        "SELECT color as my_color, temperature as fahrenheit FROM 'a/b'",
        COLOR,
        {"my_color": "red", "fahrenheit": 50},
    ),
    ("SELECT *, 15 as speed FROM 'a/b'", COLOR, {**COLOR, "speed": 15}),
    ("SELECT VALUE color FROM 'a/b'", COLOR, "red"),
    (
        "SELECT color.red as red_value FROM 'a/b'",
        {"color": {"red": 255, "green": 0, "blue": 0}, "temperature": 50},
        {"red_value": 255},
    ),
    (
        "SELECT (temperature – 32) * 5 / 9 AS celsius, upper(color) as my_color FROM 'a/b'",
        COLOR,
        {"celsius": 10, "my_color": "RED"},
    ),
    # FROM clause page.
    ("SELECT temperature AS t FROM 'a/b'", {"temperature": 50}, {"t": 50}),
    # JSON extensions page.
    (
        "SELECT foo.bar AS bar.baz FROM 'topic/subtopic'",
        {"foo": {"bar": "RED", "bar1": "GREEN", "bar2": "BLUE"}},
        {"bar": {"baz": "RED"}},
    ),
    (
        'SELECT * from \'iot/rules\' WHERE get(get(get(mydata,"item2"),"0"),"my-key") = "myValue"',
        {"mydata": {"item2": {"0": {"my-key": "myValue"}}}},
        {"mydata": {"item2": {"0": {"my-key": "myValue"}}}},
    ),
    (
        "SELECT temp, md5(deviceid) AS hashed_id FROM 'topic/#'",
        DEVICE,
        {"temp": 54.98, "hashed_id": "e37f81fb397e595c4aeb5645b8cbbbd1"},
    ),
    # Literals page.
    (
        "SELECT {'latitude': get(lat_long, 0),'longitude':get(lat_long, 1)} as lat_long "
        "FROM 'topic/subtopic'",
        {"lat_long": [47.606, -122.332]},
        {"lat_long": {"latitude": 47.606, "longitude": -122.332}},
    ),
    (
        "SELECT [lat,long] as lat_long FROM 'topic/subtopic'",
        {"lat": 47.606, "long": -122.332},
        {"lat_long": [47.606, -122.332]},
    ),
    # Case statements page.
    (
        "SELECT CASE color WHEN 'green' THEN 'go' WHEN 'yellow' THEN 'caution' "
        "WHEN 'red' THEN 'stop' ELSE 'you are not at a stop light' END as instructions "
        "FROM 'a/b'",
        {"color": "yellow"},
        {"instructions": "caution"},
    ),
    # Nested object queries page.
    (
        "SELECT (SELECT VALUE n FROM e) as sensors FROM 'my/topic'",
        NESTED,
        {"sensors": ["temperature", "light", "acidity"]},
    ),
    (
        "SELECT (SELECT v FROM e WHERE n = 'temperature') as temperature FROM 'my/topic'",
        NESTED,
        {"temperature": [{"v": 22.5}]},
    ),
    (
        "SELECT get((SELECT v FROM e WHERE n = 'temperature'), 0).v as temperature FROM 'topic'",
        NESTED,
        {"temperature": 22.5},
    ),
    # SQL versions page: an array as the top-level output.
    ("SELECT VALUE arr FROM 'topic'", {"a": {"b": "c"}, "arr": [1, 2, 3, 4]}, [1, 2, 3, 4]),
    # transform() examples.
    (
        "select value transform(\"enrichArray\", attributes, values) from 'A/B'",
        TRANSFORM,
        [
            {"a": 3, "data1": 1, "data2": 2},
            {"b": 4, "data1": 1, "data2": 2},
            {"c": 5, "data1": 1, "data2": 2},
        ],
    ),
    (
        'select value transform("enrichArray", {"key": attributes.data1}, values) from \'A/B\'',
        TRANSFORM,
        [{"a": 3, "key": 1}, {"b": 4, "key": 1}, {"c": 5, "key": 1}],
    ),
    (
        "select value transform('enrichArray', (select a, b from data2), "
        "(select value c from data2)) from 'A/B'",
        {"data1": "example", "data2": {"a": "A", "b": "B", "c": [{"y": True}, {"y": False}]}},
        [{"y": True, "a": "A", "b": "B"}, {"y": False, "a": "A", "b": "B"}],
    ),
    # decode() example.
    (
        "SELECT decode(encoded_temp,\"base64\").temperature AS temp from 'topic/subtopic'",
        {"encoded_temp": "eyAidGVtcGVyYXR1cmUiOiAzMyB9Cg=="},
        {"temp": 33},
    ),
]


@pytest.mark.parametrize(("sql", "payload", "expected"), DOC_EXAMPLES)
def test_documented_examples(sql: str, payload: Any, expected: Any) -> None:
    """Each example of the AWS IoT SQL reference gives the documented output."""
    assert run(sql, payload) == expected


FEATURES: list[tuple[str, Any, Any]] = [
    ("SELECT a.b.c FROM 'x'", {"a": {"b": {"c": 1}}}, {"c": 1}),
    ("SELECT a[1] AS second FROM 'x'", {"a": [10, 20]}, {"second": 20}),
    ("SELECT a[1].b AS b FROM 'x'", {"a": [{}, {"b": 2}]}, {"b": 2}),
    ("SELECT a[5] AS x, a[-1] AS y FROM 'x'", {"a": [1]}, {}),
    ("SELECT a[i] AS x FROM 'x'", {"a": [1, 2], "i": 1}, {"x": 2}),
    ("SELECT *.a AS x FROM 'x'", {"a": 1}, {"x": 1}),
    ("SELECT missing, present FROM 'x'", {"present": None}, {"present": None}),
    ("SELECT a AS s.x, b AS s.y FROM 'x'", {"a": 1, "b": 2}, {"s": {"x": 1, "y": 2}}),
    ("SELECT *, 1 AS state.debug FROM 'x'", {"state": {"a": 0}}, {"state": {"a": 0, "debug": 1}}),
    ("SELECT upper(c) FROM 'x'", {"c": "a"}, {"upper(c)": "A"}),
    ("SELECT VALUE missing FROM 'x'", {}, NO_MATCH),
    ("SELECT * FROM 'x' WHERE price > 100", {"price": 99}, NO_MATCH),
    ("SELECT * FROM 'x' WHERE missing = 1", {}, NO_MATCH),
    ("SELECT * FROM 'x' WHERE NOT missing = 1", {}, NO_MATCH),
    ("SELECT * FROM 'x' WHERE flag", {"flag": "TRUE"}, {"flag": "TRUE"}),
    ("SELECT * FROM 'x' WHERE flag", {"flag": 1}, NO_MATCH),
    ("SELECT * FROM 'x' WHERE 3 IN arr", {"arr": [1, 3]}, {"arr": [1, 3]}),
    ("SELECT * FROM 'x' WHERE 'b' IN arr", {"arr": ["a"]}, NO_MATCH),
    ("SELECT * FROM 'x' WHERE a = 1 OR b = 2", {"b": 2}, {"b": 2}),
    ("SELECT * FROM 'x' WHERE 100 < price", {"price": 101}, {"price": 101}),
    ("SELECT * FROM 'x' WHERE price > 100", {"price": "150"}, {"price": "150"}),
    ("SELECT * FROM 'x' WHERE price > 100", {"price": True}, NO_MATCH),
    ("SELECT * FROM 'x' WHERE a <> 'x'", {"a": None}, {"a": None}),
    ("SELECT * FROM 'x' WHERE a <> 'x'", {}, NO_MATCH),
    ("SELECT * FROM 'x' WHERE n = 1", {"n": True}, NO_MATCH),
    ("SELECT * FROM 'x' WHERE n = 1", {"n": 1.0}, {"n": 1.0}),
    ("SET @t = temp * 2 SELECT @t AS doubled FROM 'x' WHERE @t > 10", {"temp": 6}, {"doubled": 12}),
    ("SET @a = 1, @b = @a + 1 SELECT VALUE @b FROM 'x'", {}, 2),
    (
        "SELECT (SELECT VALUE x.n FROM e AS x WHERE x.v > 100) AS big FROM 'x'",
        NESTED,
        {"big": ["light"]},
    ),
    ("SELECT CASE c WHEN 1 THEN 'one' END AS r FROM 'x'", {"c": 2}, {}),
    ("SELECT CASE c WHEN 1 THEN 'one' ELSE 'other' END AS r FROM 'x'", {}, {}),
    ("select VALUE Upper(name) from 'x' where TRUE", {"name": "n"}, "N"),
    ("SELECT NULL AS n FROM 'x'", {}, {"n": None}),
]


@pytest.mark.parametrize(("sql", "payload", "expected"), FEATURES)
def test_features(sql: str, payload: Any, expected: Any) -> None:
    """Nested access, indexing, aliases, WHERE, SET and nested queries behave as documented."""
    assert run(sql, payload) == expected


def test_fields_named_like_keywords_work_outside_select_value() -> None:
    """A field called `value` can be used in WHERE and in projections after the first."""
    assert run("SELECT a, value FROM 'x' WHERE value > 1", {"a": 0, "value": 2}) == {
        "a": 0,
        "value": 2,
    }


def test_value_right_after_select_is_the_keyword() -> None:
    """`SELECT value FROM` reads as SELECT VALUE, so it is a syntax error (use get(*, 'value'))."""
    with pytest.raises(SqlError):
        compile_rule("SELECT value FROM 'x'")
    assert run("SELECT get(*, 'value') AS v FROM 'x'", {"value": 3}) == {"v": 3}


def test_select_star_returns_the_payload_without_copying() -> None:
    """`SELECT *` alone returns the payload object itself, unmodified."""
    payload = {"a": 1}
    assert compile_rule("SELECT * FROM 'x'").evaluate(payload, CTX) is payload


def test_evaluation_never_mutates_the_payload() -> None:
    """Adding fields, even nested ones, leaves the input payload as it was."""
    payload = {"state": {"a": 0}, "b": [1]}
    run("SELECT *, 1 AS state.debug, 2 AS b2 FROM 'x'", payload)
    assert payload == {"state": {"a": 0}, "b": [1]}


def test_rule_exposes_text_version_and_filter() -> None:
    """A compiled rule carries its text, SQL version and FROM filter."""
    rule = compile_rule("SELECT * FROM 'event/+'")
    assert rule.text == "SELECT * FROM 'event/+'"
    assert rule.sql_version == "2016-03-23"
    assert rule.topic_filter.text == "event/+"
    assert rule.topic_filter.matches("event/buy")
