"""S3 for the tests: moto's server, started once per session on a free local port.

``s3_server`` is the server, which a fault test may stop and start again on
the same port; ``s3_env`` points the AWS environment of one test at it and
gives it an ``s3://`` URL whose buckets no other test sees.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import unavailable

# Variables of the developer's AWS setup that would point the tests elsewhere.
_CLEARED = ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    return [*command, "-H", "127.0.0.1", "-p", str(port)]


class S3Server:
    """A moto server on 127.0.0.1; its state lives in memory and dies with it."""

    def __init__(self, log: Path) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30) -> None:
        """Start the server on its port (if it is not running) and wait until it answers."""
        if self.running:
            return
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                _command(self.port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if not self.running:
                raise RuntimeError(f"moto_server exited: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not answer in {timeout} s: {self._log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server; its buckets are gone when it starts again."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def env(self) -> dict[str, str]:
        """The AWS environment that points a process at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            # No profile or credentials file of the developer's applies.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server for the whole session."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        unavailable("S3 (moto)", str(exc))
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An ``s3://`` URL with a bucket prefix of this test's own, the environment set for it.

    Subprocesses inherit the environment; ``s3_server.env()`` is the same as a dict.
    """
    # A test that stopped the server and failed before restarting it does
    # not take the following tests down with it.
    s3_server.start()
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    yield f"s3://?bucket_prefix=t{secrets.token_hex(4)}-"
