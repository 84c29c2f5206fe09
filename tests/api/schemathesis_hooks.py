"""Hooks that the schemathesis runs of ``test_openapi`` load (``SCHEMATHESIS_HOOKS``).

schemathesis has no serializer for NDJSON, and would leave the batch route's
``application/x-ndjson`` body out of every run.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    # A body that is not a list comes from a negative case: it is sent as one line.
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)
