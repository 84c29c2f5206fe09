"""The ``nats`` action against the tests' own nats-server (JetStream): a subject that a
stream holds gets each message once, even when a crash makes the engine deliver it
again (Nats-Msg-Id); a plain subject reaches a subscriber; a server that is down is
retried; load-time checks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.actions.apps import check_error, write_app
from tests.runtime.helpers import Server, free_port, wait_until
from tests.services.nats import NatsServer

RETRY = "retry: {attempts: 3, backoff: 50ms, max_backoff: 100ms}"


class Subscriber:
    """A core NATS subscriber on a thread of its own, keeping what it receives."""

    def __init__(self, url: str, subject: str) -> None:
        self.received: list[Any] = []
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._client = self._call(self._subscribe(url, subject))

    def _call(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    async def _subscribe(self, url: str, subject: str) -> Any:
        import nats

        client = await nats.connect(url)

        async def keep(message: Any) -> None:
            self.received.append(message)

        await client.subscribe(subject, cb=keep)
        await client.flush()
        return client

    def close(self) -> None:
        self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)


def jetstream(url: str, work: Any) -> Any:
    async def go() -> Any:
        import nats

        client = await nats.connect(url)
        try:
            return await work(client.jetstream())
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.fixture
def names(nats_server: NatsServer) -> Iterator[str]:
    """A unique name for the test's subjects and stream; the stream is deleted after."""
    name = f"T{uuid.uuid4().hex[:10]}"
    yield name
    nats_server.delete_streams(name)


def test_a_stream_stores_a_redelivered_message_once_and_a_subscriber_gets_plain_ones(
    tmp_path: Path, nats_server: NatsServer, names: str
) -> None:
    """The engine is killed after both messages went out, before the delivery was
    recorded: it delivers the event again. The subscriber of the plain subject gets it
    twice, with the same Nats-Msg-Id; the stream, which drops repeats by that id, once."""
    url = nats_server.url
    jetstream(url, lambda js: js.add_stream(name=names, subjects=[f"{names}.stored.>"]))
    subscriber = Subscriber(url, f"{names}.plain.*")
    app = write_app(
        tmp_path,
        f"""
        functions:
          slow: {{handler: "slow:wait", timeout: 20s}}
        rules:
          forward:
            sql: SELECT id, qty FROM 'orders/+'
            actions:
              - nats: {{url_env: NATS_URL, subject: "{names}.stored.${{topic(2)}}"}}
              - nats: {{url_env: NATS_URL, subject: "{names}.plain.${{topic(2)}}"}}
              - function: {{name: slow}}
        """,
    )
    # Slow the first time only, so that the engine can be killed while it waits.
    (app / "slow.py").write_text(
        textwrap.dedent(
            f"""
            import os, time
            def wait(event, ctx):
                if not os.path.exists({str(tmp_path / "waited")!r}):
                    open({str(tmp_path / "waited")!r}, "w").close()
                    time.sleep(15)
            """
        )
    )
    server = Server(app, tmp_path / "data", {"NATS_URL": url}, "--workers", "1").start()
    try:
        event = server.post("/topics/orders/eu", {"id": "o-1", "qty": 3}).json()
        wait_until(lambda: subscriber.received, what="the plain message")
        wait_until((tmp_path / "waited").exists, what="the slow function")
        os.kill(server.worker_pids()[0], signal.SIGKILL)
        wait_until(lambda: len(subscriber.received) == 2, what="the message delivered again")

        first, again = subscriber.received
        assert first.subject == f"{names}.plain.eu"
        assert json.loads(first.data) == {"id": "o-1", "qty": 3}
        assert first.headers["Rulebus-Event-Id"] == event["id"]
        assert first.headers["Nats-Msg-Id"] == again.headers["Nats-Msg-Id"]

        info = jetstream(url, lambda js: js.stream_info(names))
        assert info.state.messages == 1
        stored = jetstream(url, lambda js: js.get_last_msg(names, f"{names}.stored.eu"))
        assert json.loads(stored.data) == {"id": "o-1", "qty": 3}
        # Each action has its own id: the stored message is not the plain one.
        assert stored.headers["Nats-Msg-Id"] != first.headers["Nats-Msg-Id"]
        wait_until(server.idle, what="the delivery recorded")
        assert server.dead_letters() == []
    finally:
        server.stop()
        subscriber.close()


def test_a_server_that_is_down_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        f"""
        {RETRY}
        rules:
          forward:
            sql: SELECT * FROM 'in/#'
            actions: [{{nats: {{url_env: NATS_URL, subject: a.b}}}}]
        """,
    )
    down = {"NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    server = Server(app, tmp_path / "data", down).start()
    try:
        server.post("/topics/in/a", {"n": 1})
        (letter,) = wait_until(server.dead_letters, what="a dead letter")
        assert letter["attempts"] == 3
        assert letter["failures"][0]["errorMessage"].startswith(f"nats {down['NATS_URL']}: ")
    finally:
        server.stop()


def test_a_subject_rendered_invalid_is_not_retried(
    tmp_path: Path, nats_server: NatsServer, names: str
) -> None:
    app = write_app(
        tmp_path,
        f"""
        {RETRY}
        rules:
          forward:
            sql: SELECT * FROM 'in/#'
            actions: [{{nats: {{url_env: NATS_URL, subject: "{names}.${{kind}}"}}}}]
        """,
    )
    server = Server(app, tmp_path / "data", {"NATS_URL": nats_server.url}).start()
    try:
        server.post("/topics/in/a", {"kind": "a b"})
        (letter,) = wait_until(server.dead_letters, what="a dead letter")
        assert letter["attempts"] == 1
        message = letter["failures"][0]["errorMessage"]
        assert message == f"invalid NATS subject '{names}.a b': it contains white space"
    finally:
        server.stop()


def test_bad_options_are_refused_at_load_time_with_file_line_and_key(tmp_path: Path) -> None:
    rule = "rules: {r: {sql: \"SELECT n FROM 'in'\", actions: [{nats: %s}]}}\n"
    cases = [
        ("{url: 'http://h:4222', subject: a}", "nats.url: expected a nats:// or tls:// URL"),
        ("{subject: a}", "nats.url: required"),
        ("{url: 'nats://h', subject: 'a.*'}", "wildcards are for subscriptions"),
        ("{url: 'nats://h', subject: 'a..${x}'}", "it has an empty token"),
        ("{url: 'nats://h', subject: 'a.${x'}", "nats.subject: invalid template"),
        ("{url: 'nats://h', subjet: a}", "did you mean 'subject'?"),
    ]
    for options, expected in cases:
        line = check_error(tmp_path, rule % options)
        assert "rulebus.yaml:1: " in line and expected in line, (options, line)
