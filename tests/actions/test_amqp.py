"""The ``amqp`` action against the RabbitMQ of this machine (127.0.0.1:5672, guest/guest):
a queue declared durable when missing, an exchange with a templated routing key, the
message's id, headers and persistence; an unknown exchange and an unroutable message
dead-lettered at once, a broker that is down retried; load-time checks."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.actions.apps import check_error, write_app
from tests.runtime.helpers import Server, cli, free_port, wait_until
from tests.services import unavailable

URL = "amqp://guest:guest@127.0.0.1:5672/"
ENV = {"AMQP_URL": URL}
RETRY = "retry: {attempts: 3, backoff: 50ms, max_backoff: 100ms}"


class Broker:
    """A client of the test's own: declares, reads and deletes the test's queues and
    exchanges (all named with ``suffix``)."""

    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def run(self, work: Any) -> Any:
        async def go() -> Any:
            import aio_pika

            connection = await aio_pika.connect(URL, timeout=5)
            try:
                return await work(await connection.channel())
            finally:
                await connection.close()

        return asyncio.run(go())

    def messages(self, queue: str) -> list[Any]:
        """Take the messages waiting in ``queue`` (none while it does not exist)."""

        async def take(channel: Any) -> list[Any]:
            import aiormq

            try:
                q = await channel.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return []
            out = []
            while (message := await q.get(no_ack=True, fail=False)) is not None:
                out.append(message)
            return out

        return list(self.run(take))

    def exchange_with_queue(self, binding: str) -> tuple[str, str]:
        """A topic exchange and a queue bound to it with ``binding``."""
        exchange, queue = f"rb-x-{self.suffix}", f"rb-bound-{self.suffix}"

        async def declare(channel: Any) -> None:
            import aio_pika

            x = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC)
            q = await channel.declare_queue(queue)
            await q.bind(x, binding)

        self.run(declare)
        self.exchanges.append(exchange)
        self.queues.append(queue)
        return exchange, queue

    def is_durable(self, queue: str) -> bool:
        """Redeclaring a queue as durable succeeds only if it is."""

        async def redeclare(channel: Any) -> bool:
            import aiormq

            try:
                await channel.declare_queue(queue, durable=True)
            except aiormq.exceptions.ChannelPreconditionFailed:
                return False
            return True

        return bool(self.run(redeclare))

    def clean(self) -> None:
        async def delete(channel: Any) -> None:
            for queue in self.queues:
                await channel.queue_delete(queue)
            for exchange in self.exchanges:
                await channel.exchange_delete(exchange)

        self.run(delete)


@pytest.fixture
def broker() -> Iterator[Broker]:
    found = Broker()
    try:
        found.run(lambda channel: asyncio.sleep(0))
    except Exception as exc:
        unavailable("RabbitMQ on 127.0.0.1:5672", str(exc))
    yield found
    found.clean()


def test_publishes_to_a_queue_and_an_exchange_with_id_headers_and_persistence(
    tmp_path: Path, broker: Broker
) -> None:
    """A missing queue is declared durable and gets the output as persistent JSON, with
    a message id and the event's id and topic in headers; an exchange gets it under the
    rendered routing key."""
    queue = f"rb-q-{broker.suffix}"
    broker.queues.append(queue)
    exchange, bound = broker.exchange_with_queue("orders.eu.*")
    app = write_app(
        tmp_path,
        f"""
        rules:
          forward:
            sql: SELECT id, qty * 2 AS double FROM 'orders/+'
            actions:
              - amqp: {{url_env: AMQP_URL, queue: {queue}}}
              - amqp:
                  url_env: AMQP_URL
                  exchange: {exchange}
                  routing_key: "orders.${{topic(2)}}.${{id}}"
                  persistent: false
        """,
    )
    server = Server(app, tmp_path / "data", ENV).start()
    try:
        event = server.post("/topics/orders/eu", {"id": "o-1", "qty": 4}).json()
        (got,) = wait_until(lambda: broker.messages(queue), what="the message in the queue")
        assert json.loads(got.body) == {"id": "o-1", "double": 8}
        assert got.content_type == "application/json"
        assert got.delivery_mode == 2  # persistent
        assert len(got.message_id) == 36
        assert got.headers == {"rulebus-event-id": event["id"], "rulebus-topic": "orders/eu"}
        assert broker.is_durable(queue)

        (routed,) = wait_until(lambda: broker.messages(bound), what="the routed message")
        assert json.loads(routed.body) == {"id": "o-1", "double": 8}
        assert routed.routing_key == "orders.eu.o-1"
        assert routed.delivery_mode == 1  # persistent: false
        assert routed.message_id != got.message_id  # one id per action
        assert server.dead_letters() == []
    finally:
        server.stop()


def test_an_unknown_exchange_or_an_unroutable_message_is_dead_lettered_at_once(
    tmp_path: Path, broker: Broker
) -> None:
    """The broker's NOT_FOUND and a message no queue takes (mandatory) are not retried:
    each delivery goes to the dead letters after one attempt, with the broker's reason.
    The action's next message, to a queue that exists, still goes through."""
    queue = f"rb-ok-{broker.suffix}"
    broker.queues.append(queue)
    missing = f"rb-missing-{broker.suffix}"
    app = write_app(
        tmp_path,
        f"""
        {RETRY}
        rules:
          nowhere:
            sql: SELECT * FROM 'in/nowhere'
            actions: [{{amqp: {{url_env: AMQP_URL, exchange: {missing}, routing_key: k}}}}]
          unroutable:
            sql: SELECT * FROM 'in/nowhere'
            actions:
              - amqp: {{url_env: AMQP_URL, routing_key: "rb-${{topic(2)}}-{broker.suffix}"}}
          fine:
            sql: SELECT * FROM 'in/after'
            actions: [{{amqp: {{url_env: AMQP_URL, queue: {queue}}}}}]
        """,
    )
    server = Server(app, tmp_path / "data", ENV).start()
    try:
        server.post("/topics/in/nowhere", {"n": 1})
        letters = wait_until(
            lambda: len(server.dead_letters()) == 2 and server.dead_letters(), what="2 letters"
        )
        by_rule = {letter["rule"]: letter for letter in letters}
        assert {rule: letter["attempts"] for rule, letter in by_rule.items()} == {
            "nowhere": 1,
            "unroutable": 1,
        }
        (failure,) = by_rule["nowhere"]["failures"]
        assert failure["failedAction"] == "amqp"
        assert f"NOT_FOUND - no exchange '{missing}'" in failure["errorMessage"]
        (failure,) = by_rule["unroutable"]["failures"]
        assert "unroutable: no queue bound to exchange '' for key" in failure["errorMessage"]
        assert f"'rb-nowhere-{broker.suffix}' (NO_ROUTE)" in failure["errorMessage"]

        server.post("/topics/in/after", {"n": 2})
        wait_until(lambda: broker.messages(queue), what="the message after the failures")
    finally:
        server.stop()


def test_a_broker_that_is_down_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    """Nothing listens at the URL: each attempt fails to connect, retryable, until the
    attempts run out."""
    app = write_app(
        tmp_path,
        f"""
        {RETRY}
        rules:
          forward:
            sql: SELECT * FROM 'in/#'
            actions: [{{amqp: {{url_env: AMQP_URL, queue: q}}}}]
        """,
    )
    down = {"AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    server = Server(app, tmp_path / "data", down).start()
    try:
        server.post("/topics/in/a", {"n": 1})
        (letter,) = wait_until(server.dead_letters, what="a dead letter")
        assert letter["attempts"] == 3
        message = letter["failures"][0]["errorMessage"]
        assert message.startswith("amqp amqp://guest:***@127.0.0.1:") and "Connect" in message
    finally:
        server.stop()


def test_bad_options_are_refused_at_load_time_with_file_line_and_key(tmp_path: Path) -> None:
    cases = [
        ("{url: 'http://h/', queue: q}", "amqp.url: expected a amqp:// or amqps:// URL"),
        ("{url_env: AMQP_URL, url: 'amqp://h/', queue: q}", "give either url or url_env"),
        ("{url_env: NO_SUCH_VARIABLE_HERE, queue: q}", "NO_SUCH_VARIABLE_HERE is not set"),
        ("{url_env: AMQP_URL}", "amqp.routing_key: required: a routing key template, or queue"),
        ("{url_env: AMQP_URL, queue: q, routing_key: k}", "give either queue or routing_key"),
        ("{url_env: AMQP_URL, queue: q, exchange: x}", "give either queue or exchange"),
        ("{url_env: AMQP_URL, routing_key: '${id'}", "amqp.routing_key: invalid template"),
        ("{url_env: AMQP_URL, queue: q, persistent: maybe}", "expected true or false"),
        ("{url_env: AMQP_URL, queue: q, durable: true}", "amqp.durable: unknown key"),
    ]
    rule = "rules: {forward: {sql: \"SELECT id FROM 'orders/+'\", actions: [{amqp: %s}]}}\n"
    for amqp, expected in cases:
        line = check_error(tmp_path, rule % amqp, ENV)
        assert "rulebus.yaml:1: " in line and expected in line, (amqp, line)


def test_a_password_in_the_app_file_is_a_warning(tmp_path: Path) -> None:
    rule = "rules: {forward: {sql: \"SELECT id FROM 'orders/+'\", actions: [{amqp: %s}]}}\n"
    app = write_app(tmp_path, rule % f"{{url: '{URL}', queue: q}}")
    result = cli("check", str(app))
    assert result.returncode == 0, result.stderr
    assert "rulebus.yaml:1: a password written in the app file: use url_env" in result.stderr
