"""``${expr}`` substitution templates."""

from __future__ import annotations

import pytest

from rulebus.errors import SqlError
from rulebus.sql import EvalContext, compile_template

CTX = EvalContext(topic="my/iot/topic")
PAYLOAD = {"deviceid": "iot123", "id": 7, "temp": 54.98, "coords": {"latitude": 47.6}, "n": None}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${topic()}/republish", "my/iot/topic/republish"),
        ("${id}.json", "7.json"),
        ("${topic(2)}", "iot"),
        ("device/${deviceid}/${coords.latitude}", "device/iot123/47.6"),
        ("${upper(deviceid) + '-' + id}", "IOT123-7"),
        ("${missing}|${n}", "|null"),
        ("${coords}", '{"latitude":47.6}'),
        ("${get({'a': '}'}, 'a')}", "}"),
        ("${parse_time('yyyy', 0, 'UTC')}", "1970"),
        ("plain text $ and {braces}", "plain text $ and {braces}"),
    ],
)
def test_render(text: str, expected: str) -> None:
    """Templates substitute expressions evaluated against the input payload."""
    assert compile_template(text).render(PAYLOAD, CTX) == expected


def test_constant_templates() -> None:
    """A template without ${...} is constant and renders to itself."""
    assert compile_template("a/b").is_constant
    assert not compile_template("a/${b}").is_constant


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [
        ("a/${b", "unclosed", 1, 3),
        ("a/${}", "empty", 1, 3),
        ("x\ny/${lenght(a)}", "did you mean 'length'", 2, 5),
        ("a/${b +}", "unexpected end of input", 1, 8),
    ],
)
def test_template_errors_have_positions(text: str, message: str, line: int, column: int) -> None:
    """Template errors carry the position within the whole template."""
    with pytest.raises(SqlError, match=message) as caught:
        compile_template(text)
    assert (caught.value.line, caught.value.column) == (line, column)
