"""Backends chosen by URL scheme: one module per backend, imported only when used.

Each backend module has ``from_url(url, data_dir)`` returning its store. The
embedded ones (``sqlite``, ``file``) live in ``data_dir``; the distributed
ones need an extra (``pip install 'rulebus[postgres]'``) and a server.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from rulebus.errors import RulebusError

# kind -> scheme -> (module, the extra that installs what it imports)
_BACKENDS: dict[str, dict[str, tuple[str, str | None]]] = {
    "bus": {
        "sqlite": ("rulebus.backends.sqlite_bus", None),
        "nats": ("rulebus.backends.nats_bus", "nats"),
        "tls": ("rulebus.backends.nats_bus", "nats"),
    },
    # API keys live with the event log, which every API process shares.
    "keys": {
        "sqlite": ("rulebus.backends.sqlite_keys", None),
        "nats": ("rulebus.backends.nats_keys", "nats"),
        "tls": ("rulebus.backends.nats_keys", "nats"),
    },
    "tables": {
        "sqlite": ("rulebus.backends.sqlite_tables", None),
        "postgresql": ("rulebus.backends.postgres_tables", "postgres"),
        "postgres": ("rulebus.backends.postgres_tables", "postgres"),
    },
    "objects": {
        "file": ("rulebus.backends.fs_objects", None),
        "s3": ("rulebus.backends.s3_objects", "s3"),
    },
}

DEFAULTS = {"bus": "sqlite", "tables": "sqlite", "objects": "file"}


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else url.lower()


def backend_module(kind: str, url: str) -> Any:
    """The module that implements ``kind`` for ``url``; a clear error when there is none."""
    known = _BACKENDS[kind]
    entry = known.get(scheme(url))
    option = "--bus" if kind == "keys" else f"--{kind}"  # keys follow the bus
    if entry is None:
        schemes = ", ".join(sorted(known))
        raise RulebusError(f"{option} {redact(url)}: unknown backend (known: {schemes})")
    module, extra = entry
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f" (pip install 'rulebus[{extra}]')" if extra else ""
        raise RulebusError(f"{option} {redact(url)}: cannot load {module}: {exc}{hint}") from None


def open_store(kind: str, url: str, data_dir: Path, **options: Any) -> Any:
    """A store of ``kind`` ("bus", "keys", "tables" or "objects") for ``url``, not yet opened."""
    return backend_module(kind, url).from_url(url, data_dir, **options)


def is_embedded(url: str) -> bool:
    return scheme(url) in ("sqlite", "file")


SECRET_OPTIONS = ("password", "token", "secret", "sslpassword")


def redact(url: str) -> str:
    """``url`` without its password or secret options, fit for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        query = "&".join(
            f"{key}=***" if key.lower() in SECRET_OPTIONS else f"{key}={value}"
            for key, value in parse_qsl(query, keep_blank_values=True)
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Put together by hand: urlunsplit drops the "//" of "s3://?…", whose host is empty.
    text = f"{parts.scheme}://{netloc}{parts.path}" if "://" in url else url.split("?")[0]
    return f"{text}?{query}" if query else text
