"""The peer's settings, from the environment (the driver sets them)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

NATS_URL = os.environ.get("PEER_NATS_URL", "nats://127.0.0.1:4222")
STREAM = os.environ.get("PEER_STREAM", "rulebus_bench_exchange")
SUBJECTS = f"{STREAM}.>"
DB_PATH = Path(os.environ.get("PEER_DB", "peer.sqlite3"))
ALERT_DIR = Path(os.environ.get("PEER_ALERT_DIR", "fraud-archive"))
WEBHOOK_URL = os.environ.get("PEER_WEBHOOK_URL", "")
WEBHOOK_SECRET = os.environ.get("PEER_WEBHOOK_SECRET", "")


def event_subject(event_type: str) -> str:
    return f"{STREAM}.event.{event_type}"


ALERT_SUBJECT = f"{STREAM}.alert.fraud"


def quiet_logger() -> logging.Logger:
    """The broker's logger: warnings and errors to stderr, not a line per message."""
    logger = logging.getLogger("peer")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger
