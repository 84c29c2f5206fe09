"""The peer's own settings, from the environment (the driver sets them; the shared
ones are in ``bench.peers.common``)."""

from __future__ import annotations

import logging
import os

NATS_URL = os.environ.get("PEER_NATS_URL", "nats://127.0.0.1:4222")
STREAM = os.environ.get("PEER_STREAM", "rulebus_bench_exchange")
SUBJECTS = f"{STREAM}.>"


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
