"""JSON encoding and decoding, done once per event and in one place."""

from __future__ import annotations

from typing import Any

import orjson

DecodeError = orjson.JSONDecodeError
# Already-encoded JSON, embedded as it is in a document being encoded.
Fragment = orjson.Fragment
EncodeError = orjson.JSONEncodeError


def loads(data: bytes | str) -> Any:
    """Decode JSON. orjson refuses nesting deeper than 1024 levels without recursing."""
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    """Encode compactly as UTF-8."""
    return orjson.dumps(value)


def dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()
