"""Topics are data: control characters and bytes that are not UTF-8 never become a topic."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

from tests.runtime.helpers import Server, cli, wait_until


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/topics/a/b%0D%0Ax-injected:%20yes", "control character U+000D"),
        ("/topics/a/%0Ab", "control character U+000A"),
        ("/topics/a/b%00", "NUL character"),
        ("/topics/a/b%7F", "control character U+007F"),
        ("/topics/a/b%C2%85", "control character U+0085"),
        ("/topics/a/b%FF", "not valid UTF-8"),
        ("/topics/a/%ED%A0%80", "not valid UTF-8"),  # an encoded surrogate
    ],
)
def test_publish_refuses_control_characters_and_bytes_that_are_not_utf8(
    shared_exchange: Server, path: str, problem: str
) -> None:
    answer = shared_exchange.post(path, {"id": "t-1"})
    assert answer.status_code == 400
    assert problem in answer.json()["error"]


def test_a_topic_in_any_script_is_published_as_sent(shared_exchange: Server) -> None:
    answer = shared_exchange.post("/topics/event/caf%C3%A9%E2%82%AC", {"id": "t-2"})
    assert answer.status_code == 202
    assert answer.json()["topic"] == "event/café€"


def test_a_payload_that_is_not_an_object_is_refused_as_on_routes(shared_exchange: Server) -> None:
    for body in ([1], "text", 3, None):
        answer = shared_exchange.post("/topics/event/x", body)
        assert answer.status_code == 400
        assert answer.json()["error"].startswith("expected a JSON object, got ")


@pytest.mark.parametrize(
    ("topic", "problem"),
    [("a/b\r\nc", "control character U+000D"), ("a/\x01", "control character U+0001")],
)
def test_the_cli_refuses_the_same_topics(tmp_path: Path, topic: str, problem: str) -> None:
    result = cli("publish", topic, '{"id": "c-1"}', data_dir=tmp_path)
    assert result.returncode == 2
    assert problem in result.stderr and len(result.stderr.splitlines()) == 1


def test_the_cli_refuses_a_payload_that_is_not_an_object(tmp_path: Path) -> None:
    result = cli("publish", "event/x", "[1, 2]", data_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: expected a JSON object, got an array\n"


APP = """
name: topics
tables:
  errors:
    key: [eventId]
rules:
  forward:
    sql: SELECT * FROM 'in/#'
    actions:
      - republish: {topic: "out/${sub}"}
    error_action:
      table: {name: errors}
"""


def test_a_rendered_topic_with_a_line_break_fails_its_delivery_clearly(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """The value is the payload's, so the failure is the delivery's: error action, dead letter."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(APP))
    server = Server(app, tmp_path / "data", backends).start()
    try:
        bad = {"id": "r-1", "sub": "x\r\nx-injected: yes"}
        assert server.post("/topics/in/a", bad).status_code == 202
        assert server.post("/topics/in/b", {"id": "r-2", "sub": "fine"}).status_code == 202
        (error,) = wait_until(lambda: server.scan("errors"), what="the error action")
        message = "invalid topic 'out/x\\r\\nx-injected: yes': it contains the control character"
        assert error["payload"]["id"] == "r-1"
        assert error["principal"].startswith("tests-")  # the name of the key that published it
        assert message in error["failures"][0]["errorMessage"]
        (letter,) = wait_until(server.dead_letters, what="the dead letter")
        assert letter["payload"]["id"] == "r-1"
        assert message in letter["failures"][0]["errorMessage"]
        wait_until(server.idle, what="the rest dispatched")
    finally:
        server.stop()


def test_healthz_needs_no_key_and_says_which_app(shared_exchange: Server) -> None:
    answer = httpx.get(shared_exchange.url + "/healthz")
    assert answer.json() == {"status": "ok", "app": "exchange"}
