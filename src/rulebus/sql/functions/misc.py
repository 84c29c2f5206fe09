"""``cast``, ``get``, ``get_or_default``, ``isNull``/``isUndefined``, ``newuuid``, ``transform``."""

from __future__ import annotations

import math
import uuid
from typing import Any

from rulebus.sql.functions import Function
from rulebus.sql.types import UNDEFINED, to_boolean, to_decimal, to_int_floor, to_string
from rulebus.sql.versions import V2015, V2016

_STRING_TYPES = frozenset({"string", "nvarchar", "text", "ntext", "varchar"})


def cast(value: Any, type_name: str, version: str) -> Any:
    """``cast(value AS type_name)``: the standard conversions, plus numbers ↔ booleans."""
    if type_name in _STRING_TYPES:
        return to_string(value)
    if type_name in ("int", "integer"):
        if type(value) is bool:
            return int(value)
        return to_int_floor(value)
    if type_name in ("double", "decimal"):
        number: Any = float(value) if type(value) is bool else to_decimal(value)
        if number is UNDEFINED or not math.isfinite(number):
            return UNDEFINED
        if version != V2015 and number.is_integer():
            return int(number)
        return number
    # bool / boolean
    t = type(value)
    if t is int or t is float:
        return value != 0
    return to_boolean(value)


def get(collection: Any, key: Any) -> Any:
    """An array element or string character by 0-based index, or an object's value by key."""
    t = type(collection)
    if t is dict:
        return collection.get(key, UNDEFINED) if type(key) is str else UNDEFINED
    if t is list or t is str:
        index: Any = UNDEFINED if type(key) is bool else to_int_floor(key)
        if index is UNDEFINED or not 0 <= index < len(collection):
            return UNDEFINED
        return collection[index]
    return UNDEFINED


def get_or_default(value: Any, default: Any = UNDEFINED) -> Any:
    """``value``, or ``default`` when it is Null or Undefined."""
    return default if value is UNDEFINED or value is None else value


def is_null(value: Any) -> bool:
    """Whether ``value`` is Null."""
    return value is None


def is_undefined(value: Any) -> bool:
    """Whether ``value`` is Undefined."""
    return value is UNDEFINED


def newuuid() -> str:
    """A random (version 4) UUID."""
    return str(uuid.uuid4())


def transform(mode: Any, attributes: Any, array: Any) -> Any:
    """``enrichArray``: each object of ``array`` with the attributes of ``attributes`` added."""
    if mode != "enrichArray" or type(attributes) is not dict or type(array) is not list:
        return UNDEFINED
    return [{**element, **attributes} for element in array if type(element) is dict]


FUNCTIONS = [
    Function("get", get, 2, 2),
    Function("get_or_default", get_or_default, 1, 2, since=V2016),
    Function("isnull", is_null, 1, 1),
    Function("isundefined", is_undefined, 1, 1, since=V2016),
    Function("newuuid", newuuid, 0, 0, pure=False),
    Function("transform", transform, 3, 3, since=V2016),
]
