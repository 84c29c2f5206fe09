"""The peer's own settings, from the environment (the driver sets them; the shared
ones are in ``bench.peers.common``)."""

from __future__ import annotations

import os

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/13")
