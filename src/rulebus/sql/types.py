"""The SQL value model: Undefined, the documented conversions, equality and ordering.

Values are plain decoded JSON: ``int`` is Int, ``float`` is Decimal, ``str``,
``bool``, ``list`` (Array), ``dict`` (Object), ``None`` (Null), plus the
:data:`UNDEFINED` singleton for "no value" (a missing key, a failed function).
``bool`` is a subclass of ``int`` in Python, so every numeric test here checks
the exact type.
"""

from __future__ import annotations

import decimal
import json
import math
import re
import sys
from typing import Any, Final


class _Undefined:
    """The type of :data:`UNDEFINED`; there is exactly one instance."""

    __slots__ = ()
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Undefined"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = _Undefined()

# The documented pattern for strings that convert to Decimal.
_DECIMAL_STRING = re.compile(r"-?\d+(\.\d+)?([eE]-?\d+)?")

# AWS computes in 34-digit decimals; doing float arithmetic through this context
# makes 0.1 + 0.2 give 0.3 as it does there.
DECIMAL_CONTEXT: Final = decimal.Context(prec=34)

#: Ints are unbounded, but only up to the number of decimal digits that Python will
#: turn into a string (and so into JSON): an Int result beyond it is Undefined.
MAX_INT_DIGITS: Final = 4300
INT_LIMIT: Final = 10**MAX_INT_DIGITS

#: The longest string (in characters) or array a function or ``+`` may build; a
#: longer result is Undefined, so that a payload cannot make a rule allocate
#: without bound.
MAX_RESULT_SIZE: Final = 4 * 1024 * 1024


_FLOAT_MAX: Final = int(sys.float_info.max)


def utf8(text: str) -> bytes:
    """UTF-8 bytes of ``text``; a lone surrogate (JSON allows "\\ud800") becomes "?", as in Java."""
    return text.encode("utf-8", "replace")


def is_number(value: Any) -> bool:
    """True for Int and Decimal values (never for booleans)."""
    t = type(value)
    return t is int or t is float


def parse_decimal(text: str) -> Any:
    """A numeric string as a number (Int when it has no fraction or exponent), or Undefined."""
    if _DECIMAL_STRING.fullmatch(text) is None:
        return UNDEFINED
    if "." in text or "e" in text or "E" in text:
        return float(text)
    if len(text) > MAX_INT_DIGITS:
        return UNDEFINED
    return int(text)


def to_number(value: Any) -> Any:
    """Number for Int/Decimal/numeric String, Null for Null, otherwise Undefined."""
    t = type(value)
    if t is int or t is float:
        return value
    if t is str:
        return parse_decimal(value)
    if value is None:
        return None
    return UNDEFINED


def to_decimal(value: Any) -> Any:
    """The "to Decimal" conversion, as a float; Null and failures are Undefined."""
    number = to_number(value)
    if number is None or number is UNDEFINED:
        return UNDEFINED
    if type(number) is int and not -_FLOAT_MAX <= number <= _FLOAT_MAX:
        return UNDEFINED  # beyond a double
    return float(number)


def to_int_floor(value: Any) -> Any:
    """Convert to Decimal and round down; Undefined when that fails or is not finite."""
    number = to_number(value)
    if type(number) is int:
        return number
    if type(number) is float and math.isfinite(number):
        return math.floor(number)
    return UNDEFINED


def to_boolean(value: Any) -> Any:
    """Boolean as is; "true"/"false" in any case; everything else Undefined."""
    if value is True or value is False:
        return value
    if type(value) is str:
        lowered = value.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    return UNDEFINED


def format_decimal(value: float) -> str:
    """A Decimal in standard notation where reasonable, scientific otherwise."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e16:
        return f"{value:.1f}"
    return repr(value)


def to_json_value(value: Any) -> Any:
    """``value`` with Undefined removed from objects and arrays, ready for ``json.dumps``."""
    t = type(value)
    if t is dict:
        return {k: to_json_value(v) for k, v in value.items() if v is not UNDEFINED}
    if t is list:
        return [to_json_value(v) for v in value if v is not UNDEFINED]
    return value


def to_json(value: Any) -> Any:
    """Compact JSON, as AWS serialises arrays and objects converted to strings.

    Undefined when the value has no JSON form: nested deeper than the interpreter
    can serialise, an Int of more than :data:`MAX_INT_DIGITS` digits, or an object
    that is not decoded JSON.
    """
    try:
        return json.dumps(to_json_value(value), separators=(",", ":"), ensure_ascii=False)
    except (RecursionError, ValueError, TypeError):
        return UNDEFINED


def to_string(value: Any) -> Any:
    """The "to String" conversion; Null and Undefined have no string form."""
    t = type(value)
    if t is str:
        return value
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value) if -INT_LIMIT < value < INT_LIMIT else UNDEFINED
    if t is float:
        return format_decimal(value)
    if t is list or t is dict:
        return to_json(value)
    return UNDEFINED


def same(a: Any, b: Any) -> bool:
    """Equality of two defined values: numbers by value, containers deeply, types must agree.

    Containers are compared with an explicit stack, so any nesting depth works.
    """
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        tx, ty = type(x), type(y)
        if (tx is int or tx is float) and (ty is int or ty is float):
            if x != y:
                return False
        elif tx is not ty:
            return False
        elif tx is list:
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif tx is dict:
            if x.keys() != y.keys():
                return False
            pending.extend((v, y[k]) for k, v in x.items())
        elif x != y:
            return False
    return True


def equals(a: Any, b: Any) -> Any:
    """The ``=`` operator: Undefined if either side is, otherwise :func:`same`."""
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    return same(a, b)


def not_equals(a: Any, b: Any) -> Any:
    """The ``<>`` operator; Null <> Null is false, mismatched types are unequal."""
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    return not same(a, b)


def ordering_operand(value: Any) -> Any:
    """The operand of ``< <= > >=``: a number, or Undefined (strings must be numeric)."""
    t = type(value)
    if t is int or t is float:
        return value
    if t is str:
        return parse_decimal(value)
    return UNDEFINED


def contains(array: Any, item: Any) -> Any:
    """The ``IN`` operator: whether ``item`` equals an element of ``array``."""
    if item is UNDEFINED or type(array) is not list:
        return UNDEFINED
    return any(same(item, element) for element in array)


def _decimal(value: int | float) -> decimal.Decimal:
    # repr() gives the shortest string that round-trips, so 0.1 becomes Decimal("0.1").
    return decimal.Decimal(value) if type(value) is int else decimal.Decimal(repr(value))


def decimal_op(op: str, a: int | float, b: int | float) -> Any:
    """``a op b`` computed in 34-digit decimal arithmetic, returned as a float."""
    ctx = DECIMAL_CONTEXT
    try:
        x, y = _decimal(a), _decimal(b)
        if op == "+":
            result = ctx.add(x, y)
        elif op == "-":
            result = ctx.subtract(x, y)
        elif op == "*":
            result = ctx.multiply(x, y)
        elif op == "/":
            result = ctx.divide(x, y)
        else:
            result = ctx.remainder(x, y)
    except ArithmeticError:  # decimal's DivisionByZero, InvalidOperation, Overflow
        return UNDEFINED
    number = float(result)
    return number if math.isfinite(number) else UNDEFINED


def int_op(op: str, a: int, b: int) -> Any:
    """Int ``op`` Int with Java semantics: division truncates, remainder follows the dividend."""
    if op == "+" or op == "-" or op == "*":
        result = a + b if op == "+" else a - b if op == "-" else a * b
        return result if -INT_LIMIT < result < INT_LIMIT else UNDEFINED
    if b == 0:
        return UNDEFINED
    quotient = abs(a) // abs(b)
    if op == "/":
        return quotient if (a >= 0) == (b >= 0) else -quotient
    remainder = abs(a) - quotient * abs(b)
    return remainder if a >= 0 else -remainder


def arithmetic(op: str, a: Any, b: Any) -> Any:
    """``+ - * / %`` on any two values, following the operator tables."""
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        return int_op(op, a, b)
    if (ta is int or ta is float) and (tb is int or tb is float):
        if (ta is float and not math.isfinite(a)) or (tb is float and not math.isfinite(b)):
            return UNDEFINED
        return decimal_op(op, a, b)
    if op == "+" and (ta is str or tb is str):
        left, right = to_string(a), to_string(b)
        if left is UNDEFINED or right is UNDEFINED:
            return UNDEFINED
        if len(left) + len(right) > MAX_RESULT_SIZE:
            return UNDEFINED
        return left + right
    if op != "+" and (ta is str or tb is str):
        # "If all strings convert to decimals correctly, a Decimal value is returned."
        x, y = to_decimal(a), to_decimal(b)
        if x is UNDEFINED or y is UNDEFINED or not (math.isfinite(x) and math.isfinite(y)):
            return UNDEFINED
        return decimal_op(op, x, y)
    return UNDEFINED


def negate(value: Any) -> Any:
    """Unary minus: numbers and numeric strings; anything else is Undefined."""
    t = type(value)
    if t is int or t is float:
        return -value
    if t is str:
        number = to_decimal(value)
        return UNDEFINED if number is UNDEFINED else -number
    return UNDEFINED


def whole_to_int(value: Any) -> Any:
    """SQL 2016-03-23: a Decimal that is a whole number, such as 10.0, is the Int 10."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def finish_2016(value: Any) -> Any:
    """A function's result in SQL 2016-03-23: whole Decimals become Ints, NaN and ±inf Undefined."""
    if type(value) is float:
        if value.is_integer():
            return int(value)
        if not math.isfinite(value):
            return UNDEFINED
    return value


def finish_2015(value: Any) -> Any:
    """A function's result in SQL 2015-10-08: NaN and ±inf are Undefined."""
    if type(value) is float and not math.isfinite(value):
        return UNDEFINED
    return value
