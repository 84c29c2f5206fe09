import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The tests import the example's fraud rule to know which events it flags.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "exchange"))
os.environ.setdefault("PYTHONUNBUFFERED", "1")

# Session-wide servers: PostgreSQL and Mosquitto (the machine's), S3 (moto), NATS (our own).
pytest_plugins = [
    "tests.services.postgres",
    "tests.services.s3",
    "tests.services.nats",
    "tests.services.mqtt",
]


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A real HTTP server that records webhook deliveries (``tests.runtime.helpers.Receiver``)."""
    # Imported here: at module level it would import the service plugins
    # before pytest registers them (and can rewrite their asserts).
    from tests.runtime.helpers import Receiver

    r = Receiver()
    yield r
    r.close()
