"""Backends chosen by URL: a bad or unreachable one stops a command with one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXCHANGE = Path(__file__).resolve().parents[1] / "examples" / "exchange"


def rulebus(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rulebus", *args, "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("--bus=nats://127.0.0.1:1", "error: cannot use bus at nats://127.0.0.1:1: "),
        (
            "--tables=postgresql://me:secret@127.0.0.1:1/db",
            "error: cannot use tables at postgresql://me:***@127.0.0.1:1/db: ",
        ),
        ("--bus=kafka://broker", "error: --bus kafka://broker: unknown backend (known: "),
        # The machine's own NATS (2.9, before atomic batches), where there is one.
        ("--bus=nats://127.0.0.1:4222", "error: cannot use bus at nats://127.0.0.1:4222: "),
        ("--bus=nats://127.0.0.1:4222?shards=3", "error: --bus nats://127.0.0.1:4222?shards=3: "),
    ],
)
def test_up_refuses_a_backend_it_cannot_use_in_one_line(
    option: str, expected: str, tmp_path: Path
) -> None:
    """``up`` with an unreachable or unknown backend exits 1 with one line that names the
    URL (never its password) and no traceback."""
    result = rulebus("up", str(EXCHANGE), "--port", "0", option, tmp_path=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


def test_data_commands_take_the_backend_from_the_environment(tmp_path: Path) -> None:
    """``table scan`` reads RULEBUS_TABLES when no option is given."""
    result = subprocess.run(
        [sys.executable, "-m", "rulebus", "table", "scan", "events"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "RULEBUS_TABLES": "postgresql://127.0.0.1:1/db",
            "RULEBUS_DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot use tables at postgresql://127.0.0.1:1/db: ")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("s3://?endpoint=http://h:9000&region=x", "s3://?endpoint=http://h:9000&region=x"),
        ("nats://me:pw@h:4222?stream=X&token=t0k", "nats://me:***@h:4222?stream=X&token=***"),
        ("postgresql://me:pw@h/db?schema=s", "postgresql://me:***@h/db?schema=s"),
        ("s3://?bucket_prefix=p-&secret=x", "s3://?bucket_prefix=p-&secret=***"),
        ("sqlite", "sqlite"),
    ],
)
def test_urls_in_messages_keep_their_shape_and_lose_their_secrets(url: str, shown: str) -> None:
    """What messages show of a URL is the URL without its password, token or secret."""
    from rulebus.backends.registry import redact

    assert redact(url) == shown


def test_a_data_file_that_is_not_sqlite_is_one_line(tmp_path: Path) -> None:
    """A tables or bus file SQLite cannot read stops a command with one line naming it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "bus.sqlite3").write_bytes(b"not a database " * 20)
    result = rulebus("dlq", "ls", tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: cannot use bus at {data / 'bus.sqlite3'}: SQLite: file is not a database\n"
    )
