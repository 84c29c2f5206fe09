"""``rulebus replay``: past events through a new or changed rule, and progress on stderr."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import Receiver, Server, child_env, cli, scrape, value, wait_until

BEFORE = """
egress: {{allow: [127.0.0.0/8]}}
tables:
  orders: {{key: [order]}}
  big: {{key: [order]}}
notifications:
  big-orders:
    subscribers:
      - webhook: {{url: "{url}", timeout: 2s}}
retry: {{attempts: 1, backoff: 50ms}}
rules:
  archive:
    sql: SELECT * FROM 'orders/+'
    actions:
      - table: {{name: orders}}
"""

# The rule added afterwards, to try on the orders already in the log.
NEW_RULE = """
  big-orders:
    sql: SELECT order, amount * 2 AS doubled FROM 'orders/+' WHERE amount > 10
    actions:
      - table: {name: big}
      - notify: {topic: big-orders}
"""

AMOUNTS = {"o-1": 5, "o-2": 20, "o-3": 30, "o-4": 1, "o-5": 50}
BIG = {order for order, amount in AMOUNTS.items() if amount > 10}


def orders_in_the_log(
    tmp_path: Path, receiver: Receiver, env: dict[str, str] | None = None
) -> tuple[Path, Server]:
    """An app whose orders are in the log (and archived), then given the new rule."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(BEFORE.format(url=receiver.url)))
    server = Server(app, tmp_path / "data", env).start()
    for order, amount in AMOUNTS.items():
        answer = server.post("/topics/orders/eu", {"order": order, "amount": amount})
        assert answer.status_code == 202
    server.post("/topics/refunds/eu", {"order": "r-1", "amount": 99})
    wait_until(lambda: len(server.scan("orders")) == len(AMOUNTS), what="orders archived")
    (app / "rulebus.yaml").write_text((app / "rulebus.yaml").read_text() + NEW_RULE)
    return app, server


def replay(server: Server, app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return server.cli("replay", "--rule", "big-orders", "--app", str(app), *args)


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_a_dry_run_prints_output_and_actions_per_event_and_counts_and_runs_nothing(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    app, server = orders_in_the_log(tmp_path, receiver)
    try:
        result = replay(server, app, "--dry-run")
        assert result.returncode == 0, result.stderr
        printed = lines(result.stdout)
        assert {p["output"]["order"] for p in printed} == BIG
        (o2,) = [p for p in printed if p["output"]["order"] == "o-2"]
        assert o2["topic"] == "orders/eu" and o2["output"] == {"order": "o-2", "doubled": 40}
        assert o2["actions"] == [
            {"index": 0, "action": "table", "resource": "big"},
            {"index": 1, "action": "notify", "resource": "big-orders"},
        ]
        summary = result.stderr.splitlines()[-1]
        assert "read 6, matched 3, not matched 3, errors 0 (dry run)" in summary
        assert server.scan("big") == [] and receiver.attempts == 0
    finally:
        server.stop()
        receiver.close()


def test_the_same_replay_twice_writes_rows_and_webhooks_once(tmp_path: Path) -> None:
    """The second run skips what the first delivered; a delivery that failed the first
    time is the only one the second run makes, and every webhook-id is distinct."""
    receiver = Receiver(fail_first=1)
    app, server = orders_in_the_log(tmp_path, receiver)
    try:
        first = replay(server, app)
        assert first.returncode == 1  # one delivery failed: reported, not retried
        (failure,) = lines(first.stdout)
        assert failure["failed"][0]["action"] == 1
        assert "answered 503" in failure["failed"][0]["error"]
        assert "matched 3" in first.stderr and "errors 1, delivered 2" in first.stderr
        assert {row["order"] for row in server.scan("big")} == BIG

        second = replay(server, app)
        assert second.returncode == 0, second.stderr
        assert second.stdout == ""
        assert "delivered 1, already replayed 2" in second.stderr.splitlines()[-1]

        third = replay(server, app)
        assert "delivered 0, already replayed 3" in third.stderr.splitlines()[-1]
        assert len(server.scan("big")) == 3
        assert sorted(r.json()["order"] for r in receiver.received) == sorted(BIG)
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 3

        # Another range is another replay: it delivers again, with other webhook ids.
        other = replay(server, app, "--since", "1h")
        assert "delivered 3, already replayed 0" in other.stderr.splitlines()[-1]
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 6
        assert len(server.scan("big")) == 3  # rows are keyed: replaced, not added

        # /metrics adds up the replays' processes, apart from the engine's runs.
        samples = scrape(server.url, server.key)
        replayed = "rulebus_replay_deliveries_total"
        assert value(samples, replayed, rule="big-orders", outcome="delivered") == 2 + 1 + 0 + 3
        assert value(samples, replayed, rule="big-orders", outcome="failed") == 1
        assert value(samples, replayed, rule="big-orders", outcome="already_replayed") == 2 + 3
        assert value(samples, "rulebus_rule_matches_total", rule="big-orders") == 0
    finally:
        server.stop()
        receiver.close()


def test_replayed_deliveries_are_marked_in_the_trace(tmp_path: Path) -> None:
    receiver = Receiver()
    app, server = orders_in_the_log(tmp_path, receiver)
    try:
        assert replay(server, app).returncode == 0
        row = next(r for r in server.scan("orders") if r["order"] == "o-3")
        assert row["amount"] == 30
        events = lines(replay(server, app, "--dry-run").stdout)
        event = next(e["event"] for e in events if e["output"]["order"] == "o-3")
        trace = json.loads(server.cli("trace", event, "--json", "--app", str(app)).stdout)
        (big,) = [r for r in trace["rules"] if r["rule"] == "big-orders"]
        (attempt,) = big["attempts"]
        assert attempt["kind"] == "replay" and attempt["replay"]
        assert [a["action"] for a in attempt["actions"]] == ["table", "notify"]
        assert all(a["error"] is None for a in attempt["actions"])
        tree = server.cli("trace", event, "--app", str(app)).stdout
        assert f"replay {attempt['replay']} attempt 1" in tree
    finally:
        server.stop()
        receiver.close()


def test_time_range_and_topic_filter_choose_the_events(tmp_path: Path) -> None:
    receiver = Receiver()
    app, server = orders_in_the_log(tmp_path, receiver)
    try:
        later = replay(server, app, "--dry-run", "--since", "2099-01-01T00:00:00Z")
        assert later.stdout == "" and "read 0" in later.stderr
        earlier = replay(server, app, "--dry-run", "--until", "1h")
        assert earlier.stdout == "" and "read 0" in earlier.stderr
        recent = replay(server, app, "--dry-run", "--since", "30m", "--until", "2099-01-01")
        assert len(lines(recent.stdout)) == 3
        refunds = replay(server, app, "--dry-run", "--topic", "refunds/#")
        assert refunds.stdout == "" and "read 1, matched 0, not matched 1" in refunds.stderr
    finally:
        server.stop()
        receiver.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rule", "nope"], "error: no rule 'nope' in "),
        (["--rule", "big-orders", "--since", "yesterday"], "error: invalid --since 'yesterday'"),
        (["--rule", "big-orders", "--until", "5x"], "error: invalid --until '5x'"),
        (["--rule", "big-orders", "--topic", "a/#/b"], "error: --topic: invalid topic filter"),
        (["--rule", "big-orders", "--since", "1m", "--until", "2h"], "error: --since is after"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    receiver = Receiver()
    app, server = orders_in_the_log(tmp_path, receiver)
    try:
        result = server.cli("replay", "--app", str(app), *args)
        assert result.returncode == 2
        assert result.stderr.startswith(message), result.stderr
        assert len(result.stderr.splitlines()) == 1
    finally:
        server.stop()
        receiver.close()


def test_progress_is_plain_lines_with_count_rate_and_time_left_when_not_a_terminal(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    app, server = orders_in_the_log(tmp_path, receiver)
    try:
        server.env["RULEBUS_PROGRESS_EVERY"] = "0"
        result = replay(server, app, "--dry-run")
        progress = result.stderr.splitlines()
        assert "\r" not in result.stderr
        assert len(progress) == 7  # a line per event, then the summary
        assert progress[0].startswith("replay ") and ": 1/6 events, " in progress[0]
        assert "/s, " in progress[0] and progress[0].endswith(" left")
        assert ": 6/6 events" in progress[5]
        assert progress[6].endswith("(dry run) in 0s")
    finally:
        server.stop()
        receiver.close()


def test_progress_is_a_bar_redrawn_in_place_on_a_terminal(tmp_path: Path) -> None:
    """Through a pseudo-terminal: the bar with count, rate and time left is redrawn on
    one line, then replaced by the summary."""
    receiver = Receiver()
    app, server = orders_in_the_log(tmp_path, receiver)
    server.stop()
    controller, terminal = pty.openpty()
    env = child_env({"RULEBUS_PROGRESS_EVERY": "0"})
    args = ["replay", "--rule", "big-orders", "--app", str(app), "--dry-run"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rulebus", *args, "--data-dir", str(server.data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    seen = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break  # the child closed the terminal
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert proc.wait(30) == 0
    text = seen.decode()
    assert "\r\x1b[2K[####" in text and "] replay " in text
    assert "6/6 events" in text and " left" in text
    last = text.replace("\r\n", "\n").split("\r\x1b[2K")[-1]
    assert "read 6, matched 3, not matched 3, errors 0 (dry run)" in last
    receiver.close()


DEAD = """
egress: {{allow: [127.0.0.0/8]}}
notifications:
  n:
    subscribers:
      - webhook: {{url: "{url}", timeout: 2s}}
retry: {{attempts: 1, backoff: 50ms}}
rules:
  r:
    sql: SELECT * FROM 'jobs/+'
    actions:
      - notify: {{topic: n}}
"""


def redrive_all(tmp_path: Path, env: dict[str, str] | None = None) -> None:
    receiver = Receiver(status=500)
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(DEAD.format(url=receiver.url)))
    server = Server(app, tmp_path / "data", env).start()
    try:
        for n in range(4):
            server.post("/topics/jobs/a", {"n": n})
        wait_until(lambda: len(server.dead_letters()) == 4, what="four dead letters")
        server.stop()
        first_id = server.dead_letters()[0]["id"]
        assert server.cli("dlq", "redrive", str(first_id)).stdout == "redriven: 1\n"
        server.env["RULEBUS_PROGRESS_EVERY"] = "0"
        result = server.cli("dlq", "redrive", "--all")
        assert result.returncode == 0 and result.stdout == "redriven: 3\n"
        first, summary = result.stderr.splitlines()
        assert first.startswith("dlq redrive: 3/3 dead letters, ") and first.endswith("0s left")
        assert summary.startswith("dlq redrive: redriven 3 in ")
        assert server.dead_letters() == []
    finally:
        server.stop()
        receiver.close()


def test_dlq_redrive_all_shows_progress_and_a_summary(tmp_path: Path) -> None:
    redrive_all(tmp_path)


def test_dlq_redrive_on_nats(tmp_path: Path, nats_bus: dict[str, str]) -> None:
    """By id (read one by one) and all of them, with the same progress."""
    redrive_all(tmp_path, nats_bus)


@pytest.fixture
def nats_bus(nats_server: Any) -> Any:
    nats_server.start()
    name = f"T{uuid.uuid4().hex[:12]}"
    yield {"RULEBUS_BUS": f"{nats_server.url}?stream={name}"}
    Server.stop_all()
    nats_server.delete_streams(name)


def test_replay_on_nats(tmp_path: Path, nats_bus: dict[str, str]) -> None:
    """Dry run and the real thing read the JetStream log; the rerun writes nothing more."""
    receiver = Receiver()
    app, server = orders_in_the_log(tmp_path, receiver, nats_bus)
    try:
        dry = replay(server, app, "--dry-run")
        assert {p["output"]["order"] for p in lines(dry.stdout)} == BIG
        assert "read 6, matched 3, not matched 3, errors 0" in dry.stderr
        assert replay(server, app).returncode == 0
        again = replay(server, app)
        assert "delivered 0, already replayed 3" in again.stderr.splitlines()[-1]
        assert len(receiver.received) == 3
        assert {row["order"] for row in server.scan("big")} == BIG
    finally:
        server.stop()
        receiver.close()


def test_events_a_replayed_function_publishes_are_children_in_the_trace(tmp_path: Path) -> None:
    """Replaying the exchange's check-buys publishes the alert again under an id derived
    from the replay (once, however often it runs); the buy's trace shows both children."""
    from fraud import is_fraud

    from tests.runtime.conftest import SECRET
    from tests.runtime.helpers import EXCHANGE

    receiver = Receiver()
    hook = {"RULEBUS_FRAUD_WEBHOOK_URL": receiver.url, "RULEBUS_FRAUD_WEBHOOK_SECRET": SECRET}
    server = Server(EXCHANGE, tmp_path / "data", hook).start()
    try:
        buy = next(f"b-{n}" for n in range(1000) if is_fraud(f"b-{n}"))
        server.post("/event", {"type": "buy", "price": 1, "id": buy})
        wait_until(lambda: len(receiver.received) == 1 and server.idle(), what="the alert")
        for _ in range(2):
            result = server.cli("replay", "--rule", "check-buys", "--app", str(EXCHANGE))
            assert result.returncode == 0, result.stderr
        wait_until(lambda: len(receiver.received) == 2 and server.idle(), what="the replayed alert")
        trace = wait_until(
            lambda: (
                len((t := json.loads(server.cli("trace", buy, "--json").stdout))["children"]) == 2
                and t
            ),
            what="both children traced",
        )
        dispatched, replayed = sorted(trace["children"], key=lambda c: c["replay"] is not None)
        assert dispatched["replay"] is None and replayed["replay"]
        for child in (dispatched, replayed):
            assert child["trace"]["event"]["topic"] == "alert/fraud"
            assert child["trace"]["rules"][0]["status"] == "delivered"
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 2
    finally:
        server.stop()
        receiver.close()


def test_a_replay_does_not_read_what_it_publishes(tmp_path: Path) -> None:
    """A rule that republishes into its own filter replays the events that were in the
    log when it started, not its own output (which the engine will dispatch)."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(
        textwrap.dedent(
            """
            rules:
              echo:
                sql: SELECT n + 1 AS n FROM 'loop/+'
                actions:
                  - republish: {topic: "loop/${n}"}
            """
        )
    )
    data = tmp_path / "data"
    data.mkdir()
    cli("publish", "loop/0", '{"n": 0}', data_dir=data, check=True)
    result = cli("replay", "--rule", "echo", "--app", str(app), data_dir=data)
    assert result.returncode == 0, result.stderr
    assert "read 1, matched 1, not matched 0, errors 0, delivered 1" in result.stderr
    again = cli("replay", "--rule", "echo", "--app", str(app), "--since", "1h", data_dir=data)
    assert "read 2, matched 2" in again.stderr
