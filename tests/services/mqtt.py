"""The machine's Mosquitto (127.0.0.1:1883, anonymous), and MQTT clients for the tests.

Tests isolate themselves by topics and client ids with a random part, and
keep the sessions they leave at the broker short-lived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.services import unavailable

HOST, PORT = "127.0.0.1", 1883
URL = f"mqtt://{HOST}:{PORT}"

logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt's notes on pending calls


@pytest.fixture(scope="session")
def mosquitto() -> str:
    """The broker's URL, if it answers."""
    try:
        socket.create_connection((HOST, PORT), timeout=2).close()
    except OSError as exc:
        unavailable("Mosquitto", f"nothing answers on {HOST}:{PORT} ({exc})")
    return URL


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, str] = field(default_factory=dict)


def publish(
    messages: Iterable[tuple[str, bytes | str, dict[str, str]]],
    *,
    qos: int = 1,
    rate: float | None = None,
    port: int = PORT,
) -> int:
    """Publish each (topic, payload, user properties) with ``qos``, at most ``rate`` a
    second; returns how many the broker acknowledged."""
    return asyncio.run(_publish(list(messages), qos, rate, port))


async def _publish(
    messages: list[tuple[str, bytes | str, dict[str, str]]],
    qos: int,
    rate: float | None,
    port: int,
) -> int:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    acked = 0
    async with aiomqtt.Client(
        HOST, port, identifier=unique("test-pub"), protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        for topic, payload, props in messages:
            properties = None
            if props:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.UserProperty = list(props.items())
            await client.publish(topic, payload, qos=qos, properties=properties, timeout=10)
            acked += 1
            if rate:
                await asyncio.sleep(1 / rate)
    return acked


class Subscriber:
    """A plain MQTT client in a thread of its own, keeping what arrives on ``topic_filter``."""

    def __init__(self, topic_filter: str) -> None:
        self.filter = topic_filter
        self.received: list[Message] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError(f"could not subscribe to {topic_filter}")

    async def _run(self) -> None:
        import aiomqtt

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with aiomqtt.Client(
            HOST, PORT, identifier=unique("test-sub"), protocol=aiomqtt.ProtocolVersion.V5
        ) as client:
            await client.subscribe(self.filter, qos=1)
            self._ready.set()
            reader = asyncio.create_task(self._read(client))
            await self._stop.wait()
            reader.cancel()

    async def _read(self, client: Any) -> None:
        async for message in client.messages:
            props = dict(getattr(message.properties, "UserProperty", None) or ())
            self.received.append(
                Message(message.topic.value, message.payload, message.qos, message.retain, props)
            )

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def clear_retained(topic: str) -> None:
    """Remove the retained message of ``topic`` (an empty retained publish)."""

    async def clear() -> None:
        import aiomqtt

        async with aiomqtt.Client(HOST, PORT, identifier=unique("test-clear")) as client:
            await client.publish(topic, b"", qos=1, retain=True)

    asyncio.run(clear())


class Proxy:
    """A TCP relay to the broker that the test can cut, as a broker going away would."""

    def __init__(self, port: int, target: tuple[str, int] = (HOST, PORT)) -> None:
        self.port = port
        self.target = target
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        """Stop listening and drop every connection."""
        if self._listener is not None:
            # close() alone leaves the socket listening while accept() blocks on it.
            self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def private_broker(directory: Path, config: str) -> Iterator[int]:
    """A Mosquitto of the test's own on a free port, with ``config`` added to its
    listener; yields the port. Skips (or fails in CI) without the mosquitto binary."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        unavailable("Mosquitto", "the mosquitto binary is not installed")
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = int(s.getsockname()[1])
    conf = directory / "mosquitto.conf"
    # Run as root, mosquitto becomes user mosquitto, who cannot read the test's files.
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{user}listener {port} {HOST}\npersistence false\n{config}\n")
    log = (directory / "mosquitto.log").open("wb")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"mosquitto did not start: {(directory / 'mosquitto.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
