"""``rulebus trace`` and ``GET /admin/events/{id}/trace``: what happened to one event."""

from __future__ import annotations

import json
import sqlite3
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fraud import is_fraud

from tests.runtime.conftest import SECRET
from tests.runtime.helpers import EXCHANGE, Receiver, Server, cli, make_key, wait_until


def fraud_id(flagged: bool = True) -> str:
    """A fresh event id that the exchange's fraud check flags (or not)."""
    while True:
        candidate = f"t-{uuid.uuid4().hex[:12]}"
        if is_fraud(candidate) == flagged:
            return candidate


def rule(trace: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [r for r in trace["rules"] if r["rule"] == name]
    return found


def actions(entry: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(kind, resource, error) of each action of each attempt of a matched rule."""
    return [
        (a["action"], a["resource"], a["error"])
        for att in entry["attempts"]
        for a in att["actions"]
    ]


def exchange(tmp_path: Path, receiver: Receiver, env: dict[str, str] | None = None) -> Server:
    hook = {"RULEBUS_FRAUD_WEBHOOK_URL": receiver.url, "RULEBUS_FRAUD_WEBHOOK_SECRET": SECRET}
    return Server(EXCHANGE, tmp_path / "data", {**(env or {}), **hook}).start()


def check_flagged_buy_tree(trace: dict[str, Any], buy: str) -> None:
    assert trace["event"]["id"] == buy and trace["event"]["topic"] == "event/buy"
    assert trace["dispatched"] is True and trace["app_changed"] is False
    archive = rule(trace, "archive-events")
    assert archive["status"] == "delivered"
    assert actions(archive) == [("table", "events", None)]
    (attempt,) = archive["attempts"]
    assert attempt["kind"] == "dispatch" and attempt["attempt"] == 1
    assert attempt["actions"][0]["duration_ms"] >= 0
    assert actions(rule(trace, "check-buys")) == [("function", "fraud-check", None)]
    not_matched = rule(trace, "archive-fraud")
    assert not_matched["matched"] is False and not_matched["reason"] == "topic"
    assert trace["dead_letters"] == [] and trace["retrying"] == []

    (child,) = trace["children"]
    assert (child["rule"], child["action"], child["replay"]) == ("check-buys", 0, None)
    alert = child["trace"]
    assert alert["event"]["topic"] == "alert/fraud"
    assert alert["event"]["payload"]["id"] == buy
    assert alert["event"]["client_id"] == "rule:check-buys"
    fraud = rule(alert, "archive-fraud")
    assert fraud["status"] == "delivered"
    assert actions(fraud) == [
        ("object", "fraud-archive", None),
        ("notify", "fraud-alerts", None),
    ]
    assert rule(alert, "check-buys")["reason"] == "topic"
    assert alert["children"] == []


def test_a_flagged_buy_shows_rules_row_function_child_object_and_webhook(tmp_path: Path) -> None:
    """The whole tree, over HTTP and the CLI alike: buy → archive-events (table row) and
    check-buys (function) → its alert/fraud child → object and webhook; the rule the buy
    did not match says its topic filter did not."""
    receiver = Receiver()
    server = exchange(tmp_path, receiver)
    try:
        buy = fraud_id()
        assert server.post("/event", {"type": "buy", "price": 9, "id": buy}).status_code == 202
        wait_until(lambda: receiver.received and server.idle(), what="the alert's webhook")

        answer = server.get(f"/admin/events/{buy}/trace")
        assert answer.status_code == 200, answer.text
        check_flagged_buy_tree(answer.json(), buy)

        printed = server.cli("trace", buy, "--json", "--app", str(EXCHANGE), check=True)
        assert json.loads(printed.stdout) == answer.json()

        tree = server.cli("trace", buy, "--app", str(EXCHANGE), check=True).stdout
        assert f"event {buy}  event/buy" in tree
        assert "+ archive-events: delivered" in tree
        assert "table events: ok" in tree
        assert "function fraud-check: ok" in tree
        assert "- archive-fraud: not matched (topic)" in tree
        assert "> published by check-buys action 0:" in tree
        assert "alert/fraud" in tree
        assert "object fraud-archive: ok" in tree
        assert "notify fraud-alerts: ok" in tree
    finally:
        server.stop()
        receiver.close()


def test_a_buy_that_is_not_flagged_has_no_child(tmp_path: Path) -> None:
    """No alert was published, so the trace has no children."""
    receiver = Receiver()
    server = exchange(tmp_path, receiver)
    try:
        buy = fraud_id(flagged=False)
        server.post("/event", {"type": "buy", "price": 9, "id": buy})
        wait_until(server.idle, what="dispatch")
        trace = server.get(f"/admin/events/{buy}/trace").json()
        assert rule(trace, "check-buys")["status"] == "delivered"
        assert trace["children"] == []
    finally:
        server.stop()
        receiver.close()


FAILING = """
egress: {{allow: [127.0.0.0/8]}}
notifications:
  alerts:
    subscribers:
      - webhook: {{url: "{url}", timeout: 2s}}
retry:
  attempts: 3
  backoff: 50ms
  max_backoff: 100ms
rules:
  alert:
    sql: SELECT id, level FROM 'alerts/+' WHERE level > 2
    actions:
      - notify: {{topic: alerts}}
  audit:
    sql: SELECT * FROM 'audit/#'
    actions:
      - log: {{}}
"""


def publish(server: Server, topic: str, body: dict[str, Any]) -> str:
    """Publish to a topic; the event's id (the server makes one)."""
    answer = server.post(f"/topics/{topic}", body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def failing_app(tmp_path: Path, url: str, extra: str = "") -> Path:
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "rulebus.yaml").write_text(textwrap.dedent(FAILING.format(url=url)) + extra)
    return app


def test_a_failing_webhook_shows_each_attempt_with_its_error_and_the_dead_letter(
    tmp_path: Path,
) -> None:
    """Three attempts (the dispatch, then two retries), each with its time, duration and
    the receiver's 500; the rule ends dead-lettered and the dead letter is in the trace."""
    receiver = Receiver(status=500)
    app = failing_app(tmp_path, receiver.url)
    server = Server(app, tmp_path / "data").start()
    try:
        event = publish(server, "alerts/disk", {"id": "a-1", "level": 9})
        wait_until(server.dead_letters, what="the dead letter")
        trace = wait_until(
            lambda: (
                (t := server.get(f"/admin/events/{event}/trace").json())
                and len(rule(t, "alert")["attempts"]) == 3
                and t
            ),
            what="three attempts in the trace",
        )
        alert = rule(trace, "alert")
        assert alert["status"] == "dead-lettered"
        assert [a["attempt"] for a in alert["attempts"]] == [1, 2, 3]
        assert [a["kind"] for a in alert["attempts"]] == ["dispatch", "retry", "retry"]
        times = [a["at"] for a in alert["attempts"]]
        assert times == sorted(times)
        for attempt in alert["attempts"]:
            (action,) = attempt["actions"]
            assert action["action"] == "notify" and "answered 500" in action["error"]
            assert action["duration_ms"] > 0
        (letter,) = trace["dead_letters"]
        assert letter["rule"] == "alert" and letter["attempts"] == 3
        assert "answered 500" in letter["failures"][0]["errorMessage"]
        audit = rule(trace, "audit")
        assert audit["matched"] is False and audit["reason"] == "topic"

        tree = server.cli("trace", event, "--app", str(app), check=True).stdout
        assert "+ alert: dead-lettered" in tree
        assert tree.count("failed: webhook") + tree.count("failed: ") >= 3
        assert "! dead letter" in tree
    finally:
        server.stop()
        receiver.close()


def test_a_where_that_is_false_is_the_reason_given(tmp_path: Path) -> None:
    """The topic matched, the WHERE did not: reason "where"; without --app the CLI says
    where to find the rules not matched."""
    receiver = Receiver()
    app = failing_app(tmp_path, receiver.url)
    server = Server(app, tmp_path / "data").start()
    try:
        event = publish(server, "alerts/cpu", {"id": "low-1", "level": 1})
        wait_until(server.idle, what="dispatch")
        trace = server.get(f"/admin/events/{event}/trace").json()
        alert = rule(trace, "alert")
        assert alert["matched"] is False and alert["reason"] == "where"
        assert rule(trace, "audit")["reason"] == "topic"
        assert receiver.attempts == 0

        bare = server.cli("trace", event, check=True).stdout
        assert "give --app to see the rules it did not match" in bare
    finally:
        server.stop()
        receiver.close()


def test_a_changed_app_is_flagged_and_reasons_follow_the_rules_as_they_are_now(
    tmp_path: Path,
) -> None:
    """After the rule's SQL changes, the trace says the app changed since dispatch."""
    receiver = Receiver()
    app = failing_app(tmp_path, receiver.url)
    server = Server(app, tmp_path / "data").start()
    try:
        event = publish(server, "audit/x", {"id": "au-1"})
        wait_until(server.idle, what="dispatch")
    finally:
        server.stop()
        receiver.close()
    text = (
        (app / "rulebus.yaml").read_text().replace("FROM 'audit/#'", "FROM 'audit/+' WHERE 1 = 2")
    )
    (app / "rulebus.yaml").write_text(text)
    trace = json.loads(
        Server(app, tmp_path / "data").cli("trace", event, "--json", "--app", str(app)).stdout
    )
    assert trace["app_changed"] is True
    audit = rule(trace, "audit")
    assert audit["status"] == "delivered" and audit["changed_since"] is True


def test_an_unknown_event_is_one_line_and_exit_1_or_a_404(tmp_path: Path) -> None:
    """And the route needs a key with the admin scope."""
    receiver = Receiver()
    server = Server(failing_app(tmp_path, receiver.url), tmp_path / "data").start()
    try:
        result = server.cli("trace", "no-such-event")
        assert result.returncode == 1
        assert result.stderr == (
            "error: no event 'no-such-event' in the log (unknown, or removed by retention)\n"
        )
        answer = server.get("/admin/events/no-such-event/trace")
        assert answer.status_code == 404
        assert "no event 'no-such-event'" in answer.json()["error"]
        assert server.get("/admin/events/x/trace", key="").status_code == 401
        ingest_only = make_key(server.data_dir, name="ingest-only", scopes=("ingest",))
        forbidden = server.get("/admin/events/x/trace", key=ingest_only)
        assert forbidden.status_code == 403
    finally:
        server.stop()
        receiver.close()


def test_traces_go_with_their_events_when_retention_removes_them(tmp_path: Path) -> None:
    """After compaction the event's trace answers 404, and its trace runs are gone from
    the log's file too."""
    receiver = Receiver()
    retention = "retention: {max_age: 1s, duplicate_window: 1s, compact_every: 200ms}\n"
    app = failing_app(tmp_path, receiver.url, retention)
    server = Server(app, tmp_path / "data").start()
    try:
        old = [publish(server, "audit/old", {"n": n}) for n in range(5)]
        wait_until(server.idle, what="dispatch")
        assert server.get(f"/admin/events/{old[0]}/trace").status_code == 200
        db = server.data_dir / "bus.sqlite3"
        assert runs(db) > 0
        time.sleep(1.5)
        # Compaction keeps the last event: one more lets the old ones all go.
        new = publish(server, "audit/new", {"n": 5})
        wait_until(
            lambda: all(server.get(f"/admin/events/{e}/trace").status_code == 404 for e in old),
            timeout=15,
            what="old events compacted",
        )
        wait_until(lambda: runs(db, before=new) == 0, timeout=10, what="their runs removed")
        assert server.get(f"/admin/events/{new}/trace").status_code == 200
    finally:
        server.stop()
        receiver.close()


def runs(db: Path, before: str | None = None) -> int:
    """Trace runs in the log's file (``before``: only those of events before that one)."""
    with sqlite3.connect(db) as conn:
        if before is None:
            return int(conn.execute("SELECT count(*) FROM trace_runs").fetchone()[0])
        (seq,) = conn.execute("SELECT seq FROM events WHERE id = ?", (before,)).fetchone()
        return int(
            conn.execute("SELECT count(*) FROM trace_runs WHERE last < ?", (seq,)).fetchone()[0]
        )


def test_tracing_can_be_turned_off(tmp_path: Path) -> None:
    """``trace: {enabled: false}``: nothing is recorded; the trace still shows the event and
    says no delivery was recorded for the rule that matches."""
    receiver = Receiver()
    app = failing_app(tmp_path, receiver.url, "trace: {enabled: false}\n")
    server = Server(app, tmp_path / "data").start()
    try:
        event = publish(server, "audit/off", {"id": "off-1"})
        wait_until(server.idle, what="dispatch")
        trace = server.get(f"/admin/events/{event}/trace").json()
        assert rule(trace, "audit")["reason"] == "not delivered"
        assert runs(server.data_dir / "bus.sqlite3") == 0
    finally:
        server.stop()
        receiver.close()


@pytest.mark.parametrize("value", ["off", "{enabled: maybe}"])
def test_a_bad_trace_setting_is_refused_with_its_line(tmp_path: Path, value: str) -> None:
    receiver = Receiver()
    app = failing_app(tmp_path, receiver.url, f"trace: {value}\n")
    result = cli("check", str(app))
    receiver.close()
    assert result.returncode == 2
    assert "trace" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.fixture
def nats_bus(nats_server: Any) -> Any:
    """A stream of its own on the session's nats-server; tables and buckets stay embedded."""
    nats_server.start()
    name = f"T{uuid.uuid4().hex[:12]}"
    yield {"RULEBUS_BUS": f"{nats_server.url}?stream={name}"}
    Server.stop_all()
    nats_server.delete_streams(name)


def test_the_flagged_buy_tree_on_nats(tmp_path: Path, nats_bus: dict[str, str]) -> None:
    """The same tree when the bus is NATS JetStream, and a failing delivery's attempts."""
    receiver = Receiver()
    server = exchange(tmp_path, receiver, nats_bus)
    try:
        buy = fraud_id()
        assert server.post("/event", {"type": "buy", "price": 9, "id": buy}).status_code == 202
        wait_until(lambda: receiver.received and server.idle(), what="the alert's webhook")
        # NATS: dispatch's trace runs are published within a second of the commit.
        answer = wait_until(
            lambda: (
                (a := server.get(f"/admin/events/{buy}/trace")).json()["children"]
                and a.json()["children"][0]["trace"]["rules"][0].get("attempts")
                and a
            ),
            what="the whole tree traced",
        )
        check_flagged_buy_tree(answer.json(), buy)
        printed = server.cli("trace", buy, "--json", "--app", str(EXCHANGE), check=True)
        assert json.loads(printed.stdout) == answer.json()
        assert server.get("/admin/events/nope/trace").status_code == 404
    finally:
        server.stop()
        receiver.close()


def test_retry_attempts_and_the_dead_letter_on_nats(
    tmp_path: Path, nats_bus: dict[str, str]
) -> None:
    receiver = Receiver(status=500)
    server = Server(failing_app(tmp_path, receiver.url), tmp_path / "data", nats_bus).start()
    try:
        event = publish(server, "alerts/disk", {"id": "a-1", "level": 9})
        wait_until(server.dead_letters, what="the dead letter")
        trace = wait_until(
            lambda: (
                (t := server.get(f"/admin/events/{event}/trace").json())
                and len(rule(t, "alert")["attempts"]) == 3
                and t
            ),
            what="three attempts in the trace",
        )
        alert = rule(trace, "alert")
        assert alert["status"] == "dead-lettered"
        assert [a["kind"] for a in alert["attempts"]] == ["dispatch", "retry", "retry"]
        assert all("answered 500" in a["actions"][0]["error"] for a in alert["attempts"])
        assert len(trace["dead_letters"]) == 1
    finally:
        server.stop()
        receiver.close()


def trace_messages(nats_url: str, stream: str) -> int:
    """How many messages the NATS bus's trace stream holds."""
    import asyncio

    import nats

    async def count() -> int:
        nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            info = await nc.jetstream(timeout=10).stream_info(f"{stream}_TRACE")
            return int(info.state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


def test_traces_go_with_their_events_on_nats(
    tmp_path: Path, nats_server: Any, nats_bus: dict[str, str]
) -> None:
    """Once retention has purged a slot's events, the trace runs of that slot go too."""
    receiver = Receiver()
    # Long enough for the trace runs (published within a second) to be seen first.
    retention = "retention: {max_age: 3s, duplicate_window: 1s, compact_every: 200ms}\n"
    env = {"RULEBUS_BUS": nats_bus["RULEBUS_BUS"] + "&duplicate_window=1"}
    stream = env["RULEBUS_BUS"].split("stream=")[1].split("&")[0]
    server = Server(failing_app(tmp_path, receiver.url, retention), tmp_path / "data", env)
    server.start()
    try:
        old = [publish(server, "audit/old", {"n": n}) for n in range(5)]
        wait_until(
            lambda: all(
                rule(server.get(f"/admin/events/{e}/trace").json(), "audit").get("attempts")
                for e in old
            ),
            what="old events traced",
        )
        assert trace_messages(nats_server.url, stream) > 0
        wait_until(
            lambda: all(server.get(f"/admin/events/{e}/trace").status_code == 404 for e in old),
            timeout=20,
            what="old events purged",
        )
        wait_until(
            lambda: trace_messages(nats_server.url, stream) == 0,
            timeout=20,
            what="their trace runs purged",
        )
    finally:
        server.stop()
        receiver.close()


KEYED = """
egress: {{allow: [127.0.0.0/8]}}
notifications:
  alerts:
    subscribers:
      - webhook: {{url: "{url}", timeout: 2s}}
retry: {{attempts: 3, backoff: 50ms, max_backoff: 100ms}}
rules:
  per-sensor:
    sql: SELECT * FROM 'sensors/+'
    partition_key: ${{sensor}}
    actions:
      - notify: {{topic: alerts}}
"""


def test_a_keyed_delivery_retried_in_place_shows_each_attempt(tmp_path: Path) -> None:
    """Deliveries with a partition key are retried in place, in the batch: the trace has
    each attempt, the errors of the failed ones and the success."""
    receiver = Receiver(fail_first=2)
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(KEYED.format(url=receiver.url)))
    server = Server(app, tmp_path / "data").start()
    try:
        event = publish(server, "sensors/s1", {"sensor": "s1", "value": 3})
        wait_until(lambda: receiver.received and server.idle(), what="the third attempt")
        trace = server.get(f"/admin/events/{event}/trace").json()
        keyed = rule(trace, "per-sensor")
        assert keyed["status"] == "delivered"
        assert [a["attempt"] for a in keyed["attempts"]] == [1, 2, 3]
        errors = [a["actions"][0]["error"] for a in keyed["attempts"]]
        assert "answered 503" in errors[0] and "answered 503" in errors[1]
        assert errors[2] is None
        assert trace["dead_letters"] == []
    finally:
        server.stop()
        receiver.close()
