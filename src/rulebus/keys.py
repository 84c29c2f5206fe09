"""API keys: what a key is, how one is made, and what it may do.

A key is ``rbk_`` + 12 hex characters that name it in the store (its lookup
id, not secret) + 43 characters of randomness. Only the key's SHA-256 is
stored: the key has 256 random bits, so a fast hash is as good as a slow one
(there is nothing to guess), and checking a request costs microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from rulebus.errors import BadInput
from rulebus.sql.topics import TopicFilter

#: What each scope lets a key do.
SCOPES = {
    "ingest": "POST to the app's routes",
    "publish": "POST /topics/..., within the key's topic filters",
    "admin": "/admin/... and every operational endpoint",
    "metrics": "read-only monitoring (GET /admin/stats, /metrics)",
}

PREFIX = "rbk_"
_LOOKUP = 12  # hex characters after the prefix
_KEY = re.compile(r"rbk_[0-9a-f]{12}[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(?:/(s|m|h))?")
_PER = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: never the key itself, only its digest."""

    name: str
    lookup: str
    digest: str
    scopes: tuple[str, ...]
    topics: tuple[str, ...] = ("#",)
    rate: float | None = None  # requests per second, refilled continuously
    burst: int = 0  # the bucket's size: requests allowed at once after a quiet spell
    created: int = 0  # ms since the epoch
    last_used: int | None = None
    filters: tuple[TopicFilter, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(TopicFilter(t) for t in self.topics))

    def may_publish(self, topic: str) -> bool:
        return any(f.matches(topic) for f in self.filters)

    def describe_rate(self) -> str:
        if self.rate is None:
            return "-"
        return f"{self.rate:g}/s (burst {self.burst})"


def new_key() -> tuple[str, str, str]:
    """A new key: (the key, its lookup id, its digest)."""
    lookup = secrets.token_hex(_LOOKUP // 2)
    key = f"{PREFIX}{lookup}{secrets.token_urlsafe(32)}"
    return key, lookup, digest(key)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def lookup_of(key: str) -> str | None:
    """The lookup id of something shaped like a key; None for anything else."""
    if len(key) != 59 or not _KEY.fullmatch(key):
        return None
    return key[len(PREFIX) : len(PREFIX) + _LOOKUP]


def matches(key: str, stored: ApiKey) -> bool:
    # Constant time, so that timing does not tell how much of a guess was right.
    return hmac.compare_digest(digest(key), stored.digest)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadInput(
            f"invalid key name {name[:80]!r}: use 1-64 letters, digits, '_', '.' or '-',"
            " starting with a letter or digit"
        )
    return name


def check_scopes(scopes: tuple[str, ...]) -> tuple[str, ...]:
    if not scopes:
        raise BadInput(f"a key needs at least one --scope ({', '.join(SCOPES)})")
    for scope in scopes:
        if scope not in SCOPES:
            raise BadInput(f"unknown scope {scope!r}: expected one of {', '.join(SCOPES)}")
    return tuple(dict.fromkeys(scopes))


def check_topics(topics: tuple[str, ...]) -> tuple[str, ...]:
    from rulebus.errors import SqlError

    for topic in topics:
        try:
            TopicFilter(topic)
        except SqlError as exc:
            raise BadInput(exc.message) from None
    return tuple(dict.fromkeys(topics)) or ("#",)


def parse_rate(text: str) -> float:
    """Requests per second from ``10``, ``10/s``, ``600/m`` or ``1000/h``."""
    match = _RATE.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise BadInput(
            f"invalid rate {text!r}: expected a positive number such as 10, 10/s or 600/m"
        )
    return float(match.group(1)) / _PER[match.group(2)]
