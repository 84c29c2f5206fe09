import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import EXCHANGE, Receiver, Server
from tests.services.postgres import execute

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

EMBEDDED = {"RULEBUS_BUS": "sqlite", "RULEBUS_TABLES": "sqlite", "RULEBUS_OBJECTS": "file"}


@contextlib.contextmanager
def backend_variables(kind: str, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The variables that choose ``kind`` of backends ("embedded" or "distributed").

    Distributed: the session's nats-server, PostgreSQL and S3 (moto), with a
    stream, a schema and a bucket prefix of their own, the stream and schema
    deleted afterwards (when nothing may use them any more).
    """
    if kind == "embedded":
        yield dict(EMBEDDED)
        return
    nats = request.getfixturevalue("nats_server")
    s3 = request.getfixturevalue("s3_server")
    postgres: str = request.getfixturevalue("postgres_server")
    # A fault test that stopped a server and failed does not take the next ones down.
    nats.start()
    s3.start()
    name = f"T{secrets.token_hex(6)}"
    schema = f"t_{name[1:]}"
    try:
        yield {
            "RULEBUS_BUS": f"{nats.url}?stream={name}",
            "RULEBUS_TABLES": f"{postgres}?schema={schema}",
            "RULEBUS_OBJECTS": f"s3://?bucket_prefix={name.lower()}-",
            **s3.env(),
        }
    finally:
        try:
            nats.start()
            nats.delete_streams(name)
        except Exception as exc:
            print(f"could not delete the streams of {name}: {exc!r}")
        asyncio.run(execute(postgres, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(params=["embedded", "distributed"])
def backends(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment that chooses the backends of a test's servers and commands.

    Pass it as ``env`` to ``Server`` and ``cli``; a test that takes it runs
    once with each set of backends (see ``backend_variables``).
    """
    if request.param == "distributed":
        nats = request.getfixturevalue("nats_server")
        request.node.nats_log = (nats, _size(nats.log))
    with backend_variables(request.param, request) as env:
        yield env
        Server.stop_all()  # before the stream and schema go


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report shows what its servers printed (and the NATS server's log)."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        servers = [*Server.running, *(SHARED if "shared_exchange" in item.fixturenames else [])]
        for n, server in enumerate(servers, 1):
            tail = "".join(server.output[-200:])
            report.sections.append((f"rulebus up #{n} ({server.url}), last lines", tail))
        nats_log = getattr(item, "nats_log", None)
        if nats_log is not None:
            nats, offset = nats_log
            with open(nats.log, "rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")[-6000:]
            report.sections.append(("nats-server log during the test", text))
    return report


@pytest.fixture(autouse=True)
def no_server_outlives_its_test() -> Iterator[None]:
    yield
    Server.stop_all()
    Server.running.clear()


@pytest.fixture
def exchange(tmp_path: Path, receiver: Receiver, backends: dict[str, str]) -> Iterator[Server]:
    """The exchange example on each set of backends, its webhook pointed at a local receiver."""
    env = {
        **backends,
        "RULEBUS_FRAUD_WEBHOOK_URL": receiver.url,
        "RULEBUS_FRAUD_WEBHOOK_SECRET": SECRET,
    }
    server = Server(EXCHANGE, tmp_path / "data", env).start()
    yield server
    server.stop()


# Servers that module-scoped fixtures share between tests.
SHARED: list[Server] = []


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def shared_exchange(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The exchange example on each set of backends, one for all the tests of a module
    that look only at the API's answers (and not at what is stored)."""
    receiver = Receiver()
    with backend_variables(request.param, request) as variables:
        env = {
            **variables,
            "RULEBUS_FRAUD_WEBHOOK_URL": receiver.url,
            "RULEBUS_FRAUD_WEBHOOK_SECRET": SECRET,
        }
        server = Server(EXCHANGE, tmp_path_factory.mktemp("shared") / "data", env).start()
        Server.running.remove(server)  # not stopped after the first test
        SHARED.append(server)
        try:
            yield server
        finally:
            server.stop()
            SHARED.remove(server)
            receiver.close()
