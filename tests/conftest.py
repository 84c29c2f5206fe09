import os
import sys
from pathlib import Path

# The tests import the example's fraud rule to know which events it flags.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "exchange"))
os.environ.setdefault("PYTHONUNBUFFERED", "1")

# Session-wide servers: PostgreSQL (the machine's), S3 (moto) and NATS (our own).
pytest_plugins = ["tests.services.postgres", "tests.services.s3", "tests.services.nats"]
