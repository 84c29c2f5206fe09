"""Real processes for runtime tests: the rulebus server, the CLI and a webhook receiver."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rulebus.backends.registry import open_store
from rulebus.keys import ApiKey, new_key
from tests.services.s3 import _CLEARED as AWS_CLEARED

ROOT = Path(__file__).resolve().parents[2]
EXCHANGE = ROOT / "examples" / "exchange"

# Set by the ``backends`` fixture, never inherited: without it a child runs embedded.
BACKEND_VARIABLES = ("RULEBUS_BUS", "RULEBUS_TABLES", "RULEBUS_OBJECTS")


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ours without backend choices, plus ``env``."""
    base = {
        k: v for k, v in os.environ.items() if k not in BACKEND_VARIABLES and k not in AWS_CLEARED
    }
    return {**base, **(env or {})}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(
    *args: str,
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``rulebus`` command in a child process.

    ``env`` is added to the environment: the ``backends`` fixture's variables
    choose the backends; without them the command uses the embedded ones.
    """
    cmd = [sys.executable, "-m", "rulebus", *args]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=child_env(env))
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}: {result.stderr}")
    return result


def scan(table: str, data_dir: Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    out = cli("table", "scan", table, data_dir=data_dir, env=env, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


ALL_SCOPES = ("ingest", "publish", "admin", "metrics")


def make_key(
    data_dir: Path,
    env: dict[str, str] | None = None,
    name: str = "",
    scopes: tuple[str, ...] = ALL_SCOPES,
    topics: tuple[str, ...] = ("#",),
) -> str:
    """A new API key, stored where ``rulebus keys create`` would (in this process:
    a child per key would add half a second to every server started)."""
    bus = (env or {}).get("RULEBUS_BUS", "sqlite")
    key, lookup, digest = new_key()
    name = name or f"tests-{lookup[:6]}"  # several servers may share a data directory
    record = ApiKey(name, lookup, digest, scopes, topics, created=int(time.time() * 1000))

    async def create() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        store = open_store("keys", bus, data_dir)
        await store.open()
        try:
            await store.create(record)
        finally:
            await store.close()

    asyncio.run(create())
    return key


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Server:
    """``rulebus up`` in its own process, on a free port.

    ``env`` is added to its environment (``child_env``); the CLI commands run
    through ``cli`` and ``scan`` get the same, so they see the same backends.
    """

    running: ClassVar[list[Server]] = []  # those started by this test: stopped after it

    def __init__(
        self, app: Path, data_dir: Path, env: dict[str, str] | None = None, *args: str
    ) -> None:
        self.app = app
        self.args = args
        self.data_dir = data_dir
        self.env = child_env(env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.key = ""  # an API key with every scope, made at the first start

    def start(self) -> Server:
        Server.running.append(self)
        if not self.key:
            self.key = make_key(self.data_dir, self.env)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rulebus",
                "up",
                str(self.app),
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.proc.stdout:
            self.output.append(line)
            if "listening on" in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            raise AssertionError("server exited before listening:\n" + "".join(self.output))
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """``rulebus ARGS`` on this server's data directory and backends."""
        return cli(*args, data_dir=self.data_dir, env=self.env, check=check)

    def scan(self, table: str) -> list[dict[str, Any]]:
        """The items of a table of this server's app, as ``rulebus table scan`` prints them."""
        return scan(table, self.data_dir, self.env)

    def dead_letters(self) -> list[dict[str, Any]]:
        """The dead letters, as ``rulebus dlq ls`` prints them."""
        out = self.cli("dlq", "ls", check=True).stdout
        return [json.loads(line) for line in out.splitlines()]

    @classmethod
    def stop_all(cls) -> None:
        """Stop every server a test started that still runs (``running`` keeps them all)."""
        for server in cls.running:
            if server.proc is not None and server.proc.poll() is None:
                server.stop(timeout=10)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
    ) -> httpx.Response:
        """POST as the holder of ``key`` (default: the server's key with every scope;
        "" for none)."""
        if content is None:
            content = json.dumps(body).encode()
        headers = self._authorized(headers, key)
        return httpx.post(self.url + path, content=content, headers=headers, timeout=30)

    def get(self, path: str, key: str | None = None) -> httpx.Response:
        return httpx.get(self.url + path, headers=self._authorized(None, key), timeout=30)

    def _authorized(self, headers: dict[str, str] | None, key: str | None) -> dict[str, str]:
        headers = dict(headers or {})
        key = self.key if key is None else key
        if key and not any(name.lower() == "authorization" for name in headers):
            headers["authorization"] = f"Bearer {key}"
        return headers

    def stats(self) -> dict[str, Any]:
        return self.get("/admin/stats").json()  # type: ignore[no-any-return]

    def idle(self) -> bool:
        """Every event dispatched and no delivery waiting for a retry."""
        s = self.stats()
        return bool(s["dispatched"] >= s["head"] and s["retrying"] == 0)

    def worker_pids(self) -> list[int]:
        """The engine worker processes that ``up`` runs now."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return sorted(int(pid) for pid in children.split())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, and SIGKILL if it has not exited after ``timeout`` seconds."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str = "/hook"

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server that records webhook deliveries.

    ``fail_first`` answers 503 that many times before succeeding;
    ``status`` answers that status forever when set; ``delay`` holds every
    answer back that many seconds, and ``most_at_once`` is the most requests
    it held at the same time.
    """

    fail_first: int = 0
    status: int | None = None
    # Given in order to the first attempts, before the rules above apply:
    # each a status and its headers (a redirect's Location, a Retry-After).
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    times: list[float] = field(default_factory=list)  # time.monotonic() of each attempt
    delay: float = 0.0
    at_once: int = 0
    most_at_once: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                extra: dict[str, str] = {}
                if receiver.delay:
                    with lock:
                        receiver.at_once += 1
                        receiver.most_at_once = max(receiver.most_at_once, receiver.at_once)
                    time.sleep(receiver.delay)
                    with lock:
                        receiver.at_once -= 1
                with lock:
                    receiver.attempts += 1
                    receiver.times.append(time.monotonic())
                    if receiver.answers:
                        code, extra = receiver.answers.pop(0)
                    elif receiver.status is not None:
                        code = receiver.status
                    elif receiver.fail_first > 0:
                        receiver.fail_first -= 1
                        code = 503
                    else:
                        headers = dict(self.headers.items())
                        receiver.received.append(Received(headers, body, self.path))
                        code = 204
                self.send_response(code)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written from the spec, independent of rulebus."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    lower = {k.lower(): v for k, v in headers.items()}
    signed = f"{lower['webhook-id']}.{lower['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in lower["webhook-signature"].split())


def make_certificate(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 and localhost signed by it: (cert, key, CA cert)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str,
        issuer: x509.Name | None,
        signer: ec.EllipticCurvePrivateKey | None,
        public: ec.EllipticCurvePublicKey,
        ca: bool,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("rulebus test CA", None, ca_key, ca_key.public_key(), True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("127.0.0.1", ca_cert.subject, ca_key, key.public_key(), False)
    paths = (tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem")
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return paths


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, key: str) -> Samples:
    """Every sample of GET /metrics, parsed as Prometheus parses it."""
    answer = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
