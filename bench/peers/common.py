"""What both peers share: their files, their settings, and the steps' plain work.

The drivers lay a peer out with :func:`prepare`, and the peers' processes read the
``PEER_*`` settings below; only the broker and the way steps are queued differ.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.deploy import child_env
from bench.signing import sign_headers

SCHEMA = "CREATE TABLE IF NOT EXISTS events (id TEXT NOT NULL PRIMARY KEY, item BLOB NOT NULL)"
# INSERT OR REPLACE, so a redelivered event never adds a second row.
INSERT_ROW = "INSERT OR REPLACE INTO events (id, item) VALUES (?, ?)"

DB_PATH = Path(os.environ.get("PEER_DB", "peer.sqlite3"))
ALERT_DIR = Path(os.environ.get("PEER_ALERT_DIR", "fraud-archive"))
WEBHOOK_URL = os.environ.get("PEER_WEBHOOK_URL", "")
WEBHOOK_SECRET = os.environ.get("PEER_WEBHOOK_SECRET", "")


@dataclass(frozen=True)
class Home:
    path: Path
    alerts: Path
    db_path: Path
    env: dict[str, str]


def prepare(home: Path, receiver_url: str, secret: str, settings: dict[str, str]) -> Home:
    """Make the peer's folder, fraud archive and table; its processes' environment."""
    alerts = home / "fraud-archive"
    alerts.mkdir(parents=True)
    db_path = home / "peer.sqlite3"
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA)
    env = child_env(
        {
            **settings,
            "PEER_DB": str(db_path),
            "PEER_ALERT_DIR": str(alerts),
            "PEER_WEBHOOK_URL": receiver_url + "/fraud",
            "PEER_WEBHOOK_SECRET": secret,
        }
    )
    return Home(home, alerts, db_path, env)


def connect_table(**options: Any) -> sqlite3.Connection:
    """The table in WAL mode with ``synchronous=NORMAL``, the usual advice behind workers."""
    db = sqlite3.connect(DB_PATH, isolation_level=None, timeout=30, **options)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=30000")
    return db


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def write_alert(event: dict[str, Any]) -> None:
    """The fraud alert as ``<id>.json``, written then renamed (never half a file)."""
    target = ALERT_DIR / f"{event['id']}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(encode(event))
    tmp.replace(target)


def webhook_request(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The alert's webhook body and headers, signed the Standard Webhooks way."""
    body = encode(event).encode()
    headers = {"content-type": "application/json"}
    if WEBHOOK_SECRET:
        headers.update(sign_headers(WEBHOOK_SECRET, body))
    return body, headers
