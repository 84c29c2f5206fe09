from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.helpers import EXCHANGE, Receiver, Server

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(autouse=True)
def no_server_outlives_its_test() -> Iterator[None]:
    yield
    while Server.running:
        server = Server.running.pop()
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def exchange(tmp_path: Path, receiver: Receiver) -> Iterator[Server]:
    """The exchange example running with its webhook pointed at a local receiver."""
    server = Server(
        EXCHANGE,
        tmp_path / "data",
        env={"RULEBUS_FRAUD_WEBHOOK_URL": receiver.url, "RULEBUS_FRAUD_WEBHOOK_SECRET": SECRET},
    ).start()
    yield server
    server.stop()
