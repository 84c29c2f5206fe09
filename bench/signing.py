"""Standard Webhooks signatures (https://www.standardwebhooks.com), both ends.

The receiver verifies what rulebus and the peer send; the peer signs with the same
code, so both pipelines pay for a signature.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Mapping


def new_secret() -> str:
    """A fresh secret in the ``whsec_<base64>`` form."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@functools.lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(secret: str, body: bytes, msg_id: str | None = None) -> dict[str, str]:
    """The three ``webhook-*`` headers for ``body``."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """True when one of the space-separated ``v1`` signatures matches."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    sent = headers.get("webhook-signature", "")
    if not msg_id or not timestamp:
        return False
    expected = signature(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in sent.split())
