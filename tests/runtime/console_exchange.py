"""The exchange as the console's tests run it: a copy of the example, its fraud
webhook failing until told otherwise, so that flagged buys make dead letters."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.conftest import SECRET, SHARED, backend_variables
from tests.runtime.helpers import EXCHANGE, Receiver, Server


@dataclass
class Exchange:
    server: Server
    receiver: Receiver  # the fraud webhook: answers 400 until told otherwise
    app: Path  # a copy of the example: the console edits it


@contextlib.contextmanager
def running_exchange(kind: str, request: pytest.FixtureRequest, root: Path) -> Iterator[Exchange]:
    """The exchange on ``kind`` of backends, copied under ``root``, for all the tests of
    a module (not stopped after each)."""
    app = root / "exchange"
    shutil.copytree(EXCHANGE, app, ignore=shutil.ignore_patterns("__pycache__"))
    receiver = Receiver(status=400)
    with backend_variables(kind, request) as variables:
        env = {
            **variables,
            "RULEBUS_FRAUD_WEBHOOK_URL": receiver.url,
            "RULEBUS_FRAUD_WEBHOOK_SECRET": SECRET,
        }
        server = Server(app, root / "data", env).start()
        Server.running.remove(server)  # shared by the tests of the module
        SHARED.append(server)
        try:
            yield Exchange(server, receiver, app)
        finally:
            server.stop()
            SHARED.remove(server)
            receiver.close()


def flagged(event_id: str) -> bool:
    """What the exchange's fraud check decides (examples/exchange/fraud.py)."""
    return int(hashlib.sha256(event_id.encode()).hexdigest()[:8], 16) % 2 == 1


def a_flagged_id(prefix: str) -> str:
    return next(f"{prefix}-{n}" for n in range(100) if flagged(f"{prefix}-{n}"))


def post_event(server: Server, body: dict[str, object]) -> str:
    answer = server.post("/event", body, key="")
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def letter_of(server: Server, order: str) -> dict[str, Any] | None:
    """The dead letter of the fraud alert about the exchange order ``order``, if there is one."""
    return next((d for d in server.dead_letters() if d["payload"].get("id") == order), None)
