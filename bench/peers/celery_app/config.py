"""The peer's settings, from the environment (the driver sets them)."""

from __future__ import annotations

import os
from pathlib import Path

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/13")
DB_PATH = Path(os.environ.get("PEER_DB", "peer.sqlite3"))
ALERT_DIR = Path(os.environ.get("PEER_ALERT_DIR", "fraud-archive"))
WEBHOOK_URL = os.environ.get("PEER_WEBHOOK_URL", "")
WEBHOOK_SECRET = os.environ.get("PEER_WEBHOOK_SECRET", "")

SCHEMA = "CREATE TABLE IF NOT EXISTS events (id TEXT NOT NULL PRIMARY KEY, item BLOB NOT NULL)"
