"""Math and bitwise functions: ``abs`` … ``trunc``, ``bitand`` … ``bitnot``, ``rand``."""

from __future__ import annotations

import decimal
import math
import random
from collections.abc import Callable
from typing import Any

from rulebus.sql.functions import Function
from rulebus.sql.types import (
    UNDEFINED,
    arithmetic,
    to_decimal,
    to_int_floor,
    to_number,
)


def _double(function: Callable[[float], float]) -> Callable[[Any], Any]:
    """A function of one Decimal computed in double precision; domain errors are Undefined."""

    def impl(value: Any) -> Any:
        number = to_decimal(value)
        if number is UNDEFINED:
            return UNDEFINED
        try:
            result = function(number)
        except (ValueError, OverflowError):
            return UNDEFINED
        return UNDEFINED if math.isnan(result) else result

    return impl


def _numeric(value: Any) -> Any:
    number = to_number(value)
    return UNDEFINED if number is None else number


def abs_(value: Any) -> Any:
    """Absolute value; Int stays Int, a numeric string gives a Decimal."""
    number = _numeric(value)
    if number is UNDEFINED:
        return UNDEFINED
    return abs(float(number)) if type(value) is str else abs(number)


def _rounding(function: Callable[[float], int]) -> Callable[[Any], Any]:
    def impl(value: Any) -> Any:
        number = _numeric(value)
        if type(number) is int:
            return number
        if type(number) is float and math.isfinite(number):
            return function(number)
        return UNDEFINED

    return impl


def _round_half_away(number: float) -> int:
    # AWS's examples: round(1.5) = 2 and round(-1.5) = -2. `size - whole` is exact
    # for floats, so no value just below .5 is pushed over.
    size = abs(number)
    whole = math.floor(size)
    rounded = whole + 1 if size - whole >= 0.5 else whole
    return rounded if number >= 0 else -rounded


def sign(value: Any) -> Any:
    """-1, 0 or 1 as an Int."""
    number = _numeric(value)
    if number is UNDEFINED or (type(number) is float and math.isnan(number)):
        return UNDEFINED
    return (number > 0) - (number < 0)


def atan2(y: Any, x: Any) -> Any:
    """The angle of the point (x, y); the first argument is y, as in AWS's example."""
    a, b = to_decimal(y), to_decimal(x)
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    return math.atan2(a, b)


def power(base: Any, exponent: Any) -> Any:
    """``base`` raised to ``exponent``, in double precision."""
    a, b = to_decimal(base), to_decimal(exponent)
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    try:
        result = math.pow(a, b)
    except (ValueError, OverflowError):
        return UNDEFINED
    return UNDEFINED if math.isnan(result) else result


def mod(left: Any, right: Any) -> Any:
    """The remainder, with the sign of the dividend; the same as ``%``."""
    return arithmetic("%", left, right)


def nanvl(value: Any, fallback: Any) -> Any:
    """``value`` unless it is Undefined, Null or NaN."""
    if value is UNDEFINED or value is None or (type(value) is float and math.isnan(value)):
        return fallback
    return value


def trunc(value: Any, places: Any) -> Any:
    """``value`` truncated to ``places`` (0 to 34) decimals, trailing zeros stripped."""
    number = _numeric(value)
    digits = to_int_floor(places)
    if number is UNDEFINED or digits is UNDEFINED or type(places) is str:
        return UNDEFINED
    if type(number) is int:
        return number
    if not math.isfinite(number):
        return UNDEFINED
    digits = min(max(digits, 0), 34)
    exact = decimal.Decimal(repr(number)).quantize(
        decimal.Decimal(1).scaleb(-digits),
        rounding=decimal.ROUND_DOWN,
        context=_TRUNC_CONTEXT,
    )
    result = exact.normalize(_TRUNC_CONTEXT)
    return int(result) if result == result.to_integral_value() else float(result)


# Room for every double truncated to 34 places (1e308 has 309 digits before the
# point); the default 28-digit context raises InvalidOperation for large values.
_TRUNC_CONTEXT = decimal.Context(prec=400)


def _bitwise(function: Callable[[int, int], int]) -> Callable[[Any, Any], Any]:
    def impl(left: Any, right: Any) -> Any:
        a, b = to_int_floor(left), to_int_floor(right)
        if a is UNDEFINED or b is UNDEFINED:
            return UNDEFINED
        return function(a, b)

    return impl


def bitnot(value: Any) -> Any:
    """Bitwise NOT of the Int-converted argument."""
    number = to_int_floor(value)
    return UNDEFINED if number is UNDEFINED else ~number


FUNCTIONS = [
    Function("abs", abs_, 1, 1),
    Function("acos", _double(math.acos), 1, 1),
    Function("asin", _double(math.asin), 1, 1),
    Function("atan", _double(math.atan), 1, 1),
    Function("atan2", atan2, 2, 2),
    Function("ceil", _rounding(math.ceil), 1, 1),
    Function("cos", _double(math.cos), 1, 1),
    Function("cosh", _double(math.cosh), 1, 1),
    Function("exp", _double(math.exp), 1, 1),
    Function("floor", _rounding(math.floor), 1, 1),
    Function("ln", _double(math.log), 1, 1),
    Function("log", _double(math.log10), 1, 1),
    Function("mod", mod, 2, 2),
    Function("nanvl", nanvl, 2, 2),
    Function("power", power, 2, 2),
    Function("rand", random.random, 0, 0, pure=False),
    Function("remainder", mod, 2, 2),
    Function("round", _rounding(_round_half_away), 1, 1),
    Function("sign", sign, 1, 1),
    Function("sin", _double(math.sin), 1, 1),
    Function("sinh", _double(math.sinh), 1, 1),
    Function("sqrt", _double(math.sqrt), 1, 1),
    Function("tan", _double(math.tan), 1, 1),
    Function("tanh", _double(math.tanh), 1, 1),
    Function("trunc", trunc, 2, 2),
    Function("bitand", _bitwise(lambda a, b: a & b), 2, 2),
    Function("bitor", _bitwise(lambda a, b: a | b), 2, 2),
    Function("bitxor", _bitwise(lambda a, b: a ^ b), 2, 2),
    Function("bitnot", bitnot, 1, 1),
]
