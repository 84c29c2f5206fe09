"""Property tests of the conversion and comparison rules."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rulebus.sql.types import (
    UNDEFINED,
    arithmetic,
    equals,
    not_equals,
    ordering_operand,
    parse_decimal,
    same,
    to_boolean,
    to_string,
)

NUMBERS = st.integers(-(10**12), 10**12) | st.floats(allow_nan=False, allow_infinity=False)
SCALARS = NUMBERS | st.text(max_size=5) | st.booleans() | st.none()
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(VALUES, VALUES)
def test_equality_is_symmetric_and_complemented_by_not_equals(a: Any, b: Any) -> None:
    """a = b equals b = a, and a <> b is its negation."""
    assert equals(a, b) == equals(b, a)
    assert not_equals(a, b) is (not equals(a, b))


@given(VALUES)
def test_every_defined_value_equals_itself_and_undefined_equals_nothing(a: Any) -> None:
    """Equality is reflexive (no NaN here); anything compared with Undefined is Undefined."""
    assert equals(a, a) is True
    assert equals(a, UNDEFINED) is UNDEFINED
    assert not_equals(UNDEFINED, a) is UNDEFINED


@given(st.integers(), st.booleans())
def test_booleans_never_equal_numbers(n: int, b: bool) -> None:
    """Booleans and numbers are different types, even though Python says True == 1."""
    assert same(n, b) is False


@given(NUMBERS)
def test_numeric_strings_convert_to_the_same_number(n: float) -> None:
    """A number's string form converts back to an equal number for ordering."""
    text = to_string(n)
    if "e" not in text and "inf" not in text:
        assert ordering_operand(text) == n


@given(st.text(max_size=6))
def test_only_documented_decimal_strings_convert(text: str) -> None:
    """Strings convert to numbers only if they match ^-?\\d+(\\.\\d+)?([eE]-?\\d+)?$."""
    import re

    expected = re.fullmatch(r"-?\d+(\.\d+)?([eE]-?\d+)?", text) is not None
    assert (parse_decimal(text) is not UNDEFINED) is expected


@given(st.text(max_size=6))
def test_boolean_conversion_accepts_only_true_and_false(text: str) -> None:
    """Only "true"/"false" in any case convert to Boolean."""
    result = to_boolean(text)
    if text.lower() in ("true", "false"):
        assert result is (text.lower() == "true")
    else:
        assert result is UNDEFINED


@given(st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_int_arithmetic_stays_int_with_java_division(a: int, b: int) -> None:
    """Int op Int is Int; / truncates toward zero and % takes the dividend's sign."""
    assert arithmetic("+", a, b) == a + b
    assert arithmetic("*", a, b) == a * b
    if b == 0:
        assert arithmetic("/", a, b) is UNDEFINED
    else:
        quotient, remainder = arithmetic("/", a, b), arithmetic("%", a, b)
        assert quotient * b + remainder == a
        assert abs(remainder) < abs(b) and (remainder == 0 or (remainder > 0) == (a > 0))


@given(SCALARS | st.lists(SCALARS, max_size=2), SCALARS)
def test_plus_concatenates_when_either_side_is_a_string(a: Any, b: Any) -> None:
    """String + anything is string concatenation of the converted operands."""
    if type(a) is str or type(b) is str:
        left, right = to_string(a), to_string(b)
        expected = UNDEFINED if UNDEFINED in (left, right) else left + right
        assert arithmetic("+", a, b) == expected
