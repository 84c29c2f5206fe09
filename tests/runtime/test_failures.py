"""Failed actions are retried with backoff, then handed to the error action and dead-lettered."""

import textwrap
from pathlib import Path

from tests.runtime.helpers import Receiver, Server, wait_until

APP = """
egress: {{allow: [127.0.0.0/8]}}
tables:
  errors:
    key: [eventId]
notifications:
  alerts:
    subscribers:
      - webhook: {{url: "{url}", timeout: 2s}}
retry:
  attempts: 3
  backoff: 50ms
  max_backoff: 200ms
rules:
  alert:
    sql: SELECT id, level FROM 'alerts/+' WHERE level > 2
    actions:
      - notify: {{topic: alerts}}
    error_action:
      table: {{name: errors}}
"""


def make_app(tmp_path: Path, url: str) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(APP.format(url=url)))
    return app


def test_a_receiver_that_recovers_gets_the_event_after_retries(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """Two 503s, then success: delivered once, nothing dead-lettered."""
    receiver = Receiver(fail_first=2)
    server = Server(make_app(tmp_path, receiver.url), tmp_path / "data", backends).start()
    try:
        assert server.post("/topics/alerts/disk", {"id": "a-1", "level": 5}).status_code == 202
        wait_until(lambda: receiver.received and server.idle(), what="delivery")
        assert receiver.attempts == 3
        assert [r.json() for r in receiver.received] == [{"id": "a-1", "level": 5}]
        assert server.dead_letters() == []
    finally:
        server.stop()
        receiver.close()


def test_a_receiver_that_never_recovers_ends_in_the_error_action_and_the_dlq(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """After the configured attempts the error action gets an AWS-style payload and the
    dead letter can be listed and redriven once the receiver is back."""
    receiver = Receiver(status=500)
    server = Server(make_app(tmp_path, receiver.url), tmp_path / "data", backends).start()
    try:
        server.post("/topics/alerts/disk", {"id": "a-2", "level": 9})
        server.post("/topics/alerts/cpu", {"id": "a-3", "level": 1})  # WHERE is false
        errors = wait_until(lambda: server.scan("errors"), what="error action")
        assert receiver.attempts == 3
        (error,) = errors
        assert error["ruleName"] == "alert"
        assert error["topic"] == "alerts/disk"
        assert error["payload"] == {"id": "a-2", "level": 9}
        assert error["attempts"] == 3
        assert error["failures"][0]["failedAction"] == "notify"
        assert "answered 500" in error["failures"][0]["errorMessage"]

        (letter,) = server.dead_letters()
        assert letter["rule"] == "alert" and letter["payload"]["id"] == "a-2"

        receiver.status = None
        redrive = server.cli("dlq", "redrive", str(letter["id"]))
        assert redrive.stdout.strip() == "redriven: 1"
        wait_until(lambda: receiver.received, what="redriven delivery")
        assert receiver.received[0].json() == {"id": "a-2", "level": 9}
        wait_until(server.idle, what="idle")
        assert server.dead_letters() == []
    finally:
        server.stop()
        receiver.close()


def test_a_client_error_from_the_receiver_is_not_retried(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """A 400 will not get better: dead-lettered after one attempt."""
    receiver = Receiver(status=400)
    server = Server(make_app(tmp_path, receiver.url), tmp_path / "data", backends).start()
    try:
        server.post("/topics/alerts/disk", {"id": "a-4", "level": 9})
        wait_until(lambda: server.scan("errors"), what="error action")
        assert receiver.attempts == 1
    finally:
        server.stop()
        receiver.close()


def test_an_error_action_publishes_under_its_own_id(tmp_path: Path) -> None:
    """The error action's republished event is not mistaken for the one the rule's
    first action republished for the same event (same rule, same event)."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(
        textwrap.dedent(
            """
            tables:
              needs_sku: {key: [sku]}
              seen: {key: [src, topic]}
            rules:
              order:
                sql: SELECT *, id AS src FROM 'orders/+'
                actions:
                  - republish: {topic: copies/order}
                  - table: {name: needs_sku}
                error_action:
                  republish: {topic: failures/order}
              seen:
                sql: SELECT payload.id AS src, topic() AS topic FROM 'failures/#'
                actions: [{table: {name: seen}}]
              copied:
                sql: SELECT src, topic() AS topic FROM 'copies/#'
                actions: [{table: {name: seen}}]
            """
        )
    )
    server = Server(app, tmp_path / "data").start()
    try:
        server.post("/topics/orders/new", {"id": "o-1"})  # no sku: the table action fails
        rows = wait_until(lambda: r if len(r := server.scan("seen")) == 2 else None, what="both")
        assert sorted(row["topic"] for row in rows) == ["copies/order", "failures/order"]
    finally:
        server.stop()


TWO_ACTIONS = """
egress: {{allow: [127.0.0.0/8]}}
notifications:
  good:
    subscribers:
      - webhook: {{url: "{good}", timeout: 2s}}
  bad:
    subscribers:
      - webhook: {{url: "{bad}", timeout: 2s}}
retry: {{attempts: 2, backoff: 50ms, max_backoff: 100ms}}
rules:
  alert:
    sql: SELECT * FROM 'alerts/+'
    actions:
      - notify: {{topic: good}}
      - notify: {{topic: bad}}
"""


def test_a_redrive_runs_again_only_the_actions_that_failed(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """The first action delivered, the second failed for good: redriving the dead letter
    sends the second once more, and not the first (its webhook gets one post in all)."""
    good, bad = Receiver(), Receiver(status=400)
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(
        textwrap.dedent(TWO_ACTIONS.format(good=good.url, bad=bad.url))
    )
    server = Server(app, tmp_path / "data", backends).start()
    try:
        server.post("/topics/alerts/disk", {"id": "a-9"})
        (letter,) = wait_until(server.dead_letters, what="the dead letter")
        assert len(good.received) == 1 and bad.attempts == 1
        bad.status = None
        assert server.cli("dlq", "redrive", str(letter["id"])).returncode == 0
        wait_until(lambda: bad.received, what="the redriven delivery")
        wait_until(server.idle, what="idle")
        assert [r.json() for r in bad.received] == [{"id": "a-9"}]
        assert len(good.received) == 1
        assert server.dead_letters() == []
    finally:
        server.stop()
        good.close()
        bad.close()
