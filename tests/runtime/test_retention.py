"""Retention: the engine removes old events that are done with, and nothing else.

One app, on each set of backends: events that were dispatched go after
``max_age``; an event a retry or a dead letter needs, and events not yet
dispatched, stay and are delivered once their function works again (after a
``kill -9`` and a restart, from the log). An id repeated within the duplicate
window is refused; once the window is over, it is accepted as a new event.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from rulebus.template import load_app
from tests.runtime.helpers import Server, cli, wait_until

APP = """\
name: retention
retention:
  max_age: 1s
  duplicate_window: 1s
  compact_every: 200ms
tables:
  events: {key: [id]}
  done: {key: [id]}
functions:
  gate: {handler: "gate:handle", timeout: 5s}
retry:
  attempts: 1000
  backoff: 100ms
  max_backoff: 300ms
rules:
  archive:
    sql: SELECT * FROM 'event/+'
    actions: [{table: {name: events}}]
  gated:
    sql: SELECT * FROM 'event/gated'
    actions: [{function: {name: gate}}]
  doomed:
    sql: SELECT * FROM 'event/doomed'
    actions: [{function: {name: gate}}]
    retry: {attempts: 1}
  ordered:
    # Retried in place until it works: nothing after it is recorded as dispatched.
    sql: SELECT * FROM 'event/ordered'
    partition_key: ${k}
    actions: [{function: {name: gate}}]
  finished:
    sql: SELECT * FROM 'done/+'
    actions: [{table: {name: done}}]
api:
  routes:
    - {path: /event, topic: "event/${type}", required: [type], auth: none}
"""

# Fails until the gate file exists; then publishes done/<id>. Every call is noted.
GATE = """\
import os
from pathlib import Path


def handle(event, ctx):
    gate = Path(os.environ["RETENTION_GATE"])
    with open(str(gate) + ".calls", "a") as calls:
        calls.write(event["id"] + "\\n")
    if not gate.exists():
        raise RuntimeError("the gate is closed")
    ctx.publish("done/" + event["id"], event)
"""


def app(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "rulebus.yaml").write_text(APP)
    (folder / "gate.py").write_text(GATE)
    return folder


def ids(rows: list[dict[str, object]]) -> set[object]:
    return {row["id"] for row in rows}


def test_old_events_go_and_what_is_still_needed_stays(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    gate = tmp_path / "gate"
    env = {**backends, "RETENTION_GATE": str(gate)}
    if "nats" in env["RULEBUS_BUS"]:
        # JetStream detects repeats itself, for the stream's window.
        env["RULEBUS_BUS"] += "&duplicate_window=1"
    server = Server(app(tmp_path), tmp_path / "data", env).start()

    def post(id_: str, kind: str, **more: str) -> tuple[int, bool]:
        answer = server.post("/event", {"id": id_, "type": kind, **more}, key="")
        assert answer.status_code in (200, 202), answer.text
        return answer.status_code, answer.json()["duplicate"]

    plain = [f"p{i}" for i in range(20)]
    for id_ in plain:
        post(id_, "plain")
    # The newest: the window is a second, and a busy machine takes that for 20 posts.
    assert post("p19", "plain") == (200, True), "a repeat within the window is refused"
    post("r0", "gated")
    post("d0", "doomed")
    wait_until(lambda: ids(server.scan("events")) >= {*plain, "r0", "d0"}, what="archived")
    wait_until(lambda: [d["event_id"] for d in server.dead_letters()] == ["d0"], what="letter")

    # Holds back what comes after it: nothing later is recorded as dispatched.
    post("o0", "ordered", k="a")
    calls = Path(str(gate) + ".calls")
    wait_until(lambda: calls.exists() and "o0" in calls.read_text(), what="o0 tried")
    waiting = [f"q{i}" for i in range(10)]
    for id_ in waiting:
        post(id_, "gated")
    posted = time.monotonic()

    # Once compaction has removed it (SQLite) or the window is over (JetStream),
    # the id is new again.
    wait_until(lambda: post("p1", "plain") == (202, False), timeout=15, what="p1 accepted")
    assert any("retention: removed" in line for line in server.output), server.output[-20:]
    # Compaction runs a few more times while the waiting events are older than
    # max_age and the window (a second each, counted from the last pass before them).
    time.sleep(max(0.0, posted + 2.0 - time.monotonic()))

    server.kill9()
    gate.touch()
    server.start()
    # The retry, and the events not recorded as dispatched, read again from the log.
    wait_until(lambda: ids(server.scan("done")) >= {"r0", "o0", *waiting}, what="delivered")
    (letter,) = server.dead_letters()
    assert (letter["event_id"], letter["payload"]["type"]) == ("d0", "doomed")
    server.cli("dlq", "redrive", "--all", check=True)
    wait_until(lambda: "d0" in ids(server.scan("done")), what="redriven")
    assert ids(server.scan("events")) >= {*plain, *waiting, "r0", "d0", "o0"}


def test_retention_is_read_from_the_app_file(tmp_path: Path) -> None:
    """Durations take h and d, sizes take decimal and binary units; by default
    nothing is ever removed."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "rulebus.yaml").write_text("retention:\n  max_age: 7d\n  max_size: 1.5GiB\n")
    retention = load_app(folder).retention
    assert (retention.max_age, retention.max_size) == (7 * 86400, int(1.5 * 2**30))
    assert (retention.duplicate_window, retention.compact_every) == (120, 60)
    (folder / "rulebus.yaml").write_text("retention: {max_size: 10GB, compact_every: 1h}\n")
    retention = load_app(folder).retention
    assert (retention.max_age, retention.max_size, retention.compact_every) == (None, 10**10, 3600)
    (folder / "rulebus.yaml").write_text("name: forever\n")
    assert load_app(folder).retention.keeps_everything


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ("max_age: a week", "retention.max_age", "expected a positive duration"),
        ("max_size: 10TB", "retention.max_size", "expected a positive size such as 500MB"),
        ("max_ages: 7d", "retention.max_ages", "did you mean 'max_age'"),
    ],
)
def test_a_bad_retention_names_file_line_and_key(
    tmp_path: Path, section: str, key: str, message: str
) -> None:
    (tmp_path / "rulebus.yaml").write_text(textwrap.dedent(f"name: x\nretention:\n  {section}\n"))
    result = cli("check", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: {tmp_path / 'rulebus.yaml'}:3: {key}: ")
    assert message in result.stderr
