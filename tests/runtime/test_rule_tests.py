"""``rulebus test APP``: rule tests run through the real CLI, in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.runtime.helpers import EXCHANGE, Receiver, child_env, cli

RULEBUS = Path(sys.executable).parent / "rulebus"

# Trades are archived; a rule flags big ones through a function that
# republishes them, and the flag is stored and notified (log and webhook).
APP = """
name: trades
tables:
  trades: {key: [id]}
buckets: [flags]
egress: {allow: [127.0.0.0/8]}
notifications:
  big:
    subscribers:
      - log: {}
      - webhook: {url: "%(webhook)s"}
functions:
  flag: {handler: handlers:flag}
rules:
  archive:
    sql: SELECT *, price * qty AS total FROM 'trade/+'
    actions:
      - table: {name: trades}
  check:
    sql: SELECT * FROM 'trade/+' WHERE qty > 10
    actions:
      - function: {name: flag}
    error_action:
      republish: {topic: "errors/${ruleName}"}
  keep-flag:
    sql: SELECT id, newuuid() AS ref, timestamp() AS at FROM 'flag/#'
    actions:
      - object: {bucket: flags, key: "${id}.json"}
      - notify: {topic: big}
"""

HANDLERS = """
def flag(event, ctx):
    if event["price"] < 0:
        raise ValueError(f"negative price in {event['id']}")
    ctx.publish("flag/big", {"id": event["id"]})
"""

PASSING = """
tests:
  - name: a big trade is archived, flagged, stored and notified
    now: 2026-03-01T12:00:00Z
    events:
      - topic: trade/acme
        payload: {id: t1, price: 5, qty: 20}
    expect:
      rules:
        archive: {output: {id: t1, price: 5, qty: 20, total: 100}}
        keep-flag: {output: {id: t1, ref: {$any: uuid}, at: 1772366400000}}
      tables:
        trades: [{id: t1, price: 5, qty: 20, total: 100}]
      published:
        - {topic: flag/big, payload: {id: t1}}
      buckets:
        flags:
          t1.json: {id: t1, ref: {$any: uuid}, at: 1772366400000}
      notifications:
        big: [{id: t1, ref: {$any: string}, at: 1772366400000}]
"""


def make_app(tmp_path: Path, tests: str, webhook: str = "http://127.0.0.1:9/hook") -> Path:
    app = tmp_path / "app"
    (app / "tests").mkdir(parents=True)
    (app / "rulebus.yaml").write_text(textwrap.dedent(APP % {"webhook": webhook}))
    (app / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    (app / "tests" / "trades.yaml").write_text(textwrap.dedent(tests))
    return app


def run_tests(
    app: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``rulebus test`` run from inside the app folder, as a user would."""
    return subprocess.run(
        [str(RULEBUS), "test", ".", *args],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(env),
    )


def test_the_exchange_ships_tests_of_its_three_rules_and_they_pass() -> None:
    """The exchange's tests, fraud branch included, pass and say so in one line."""
    result = subprocess.run(
        [str(RULEBUS), "test", str(EXCHANGE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "7 passed (7 tests in 2 files)\n"
    assert result.stderr == ""
    tests = "".join(p.read_text() for p in sorted((EXCHANGE / "tests").glob("*.yaml")))
    for rule in ("archive-events", "check-buys", "archive-fraud"):
        assert rule in tests
    assert "topic: alert/fraud" in tests and "fraud-alerts:" in tests


def test_a_passing_test_checks_every_kind_of_action_and_fixes_the_clock(tmp_path: Path) -> None:
    """Table rows, published events, objects and notifications all match; timestamp() is `now`."""
    app = make_app(tmp_path, PASSING)
    result = run_tests(app, "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS tests/trades.yaml:3  a big trade is archived, flagged, stored and notified" in (
        result.stdout
    )
    assert result.stdout.endswith("1 passed (1 test in 1 file)\n")


def test_a_wrong_value_fails_with_its_path_and_a_diff(tmp_path: Path) -> None:
    """The report names the test, the path of what differs, and shows a unified diff."""
    app = make_app(tmp_path, PASSING.replace("total: 100}]", "total: 101}]"))
    result = run_tests(app)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "FAIL tests/trades.yaml:3  a big trade is archived, flagged, stored and notified"
    )
    assert lines[1] == "  tables.trades[0].total: expected 101, got 100"
    assert "  --- expected" in lines and "  +++ actual" in lines
    assert '  -        "total": 101' in lines and '  +        "total": 100' in lines
    assert lines[-1] == "0 passed, 1 failed (1 test in 1 file)"


def test_an_extra_row_or_message_in_a_listed_table_or_topic_fails(tmp_path: Path) -> None:
    """A listed table or notification topic must hold exactly what the test gives."""
    tests = """
    tests:
      - name: two big trades
        events:
          - {topic: trade/acme, payload: {id: t1, price: 5, qty: 20}}
          - {topic: trade/acme, payload: {id: t2, price: 6, qty: 30}}
        expect:
          tables:
            trades: [{id: t1, price: 5, qty: 20, total: 100}]
          notifications:
            big: [{id: t1, ref: {$any: uuid}, at: {$any: integer}}]
    """
    result = run_tests(make_app(tmp_path, tests))
    assert result.returncode == 1
    assert '  tables.trades[1]: unexpected {"id":"t2","price":6,"qty":30,"total":180}' in (
        result.stdout.splitlines()
    )
    assert "  notifications.big[1]: unexpected {" in result.stdout


def test_a_matcher_of_the_wrong_kind_fails(tmp_path: Path) -> None:
    """`{$any: integer}` does not match the uuid that newuuid() gives."""
    tests = PASSING.replace("ref: {$any: string}", "ref: {$any: integer}")
    result = run_tests(make_app(tmp_path, tests))
    assert result.returncode == 1
    assert "  notifications.big[0].ref: expected any integer, got " in result.stdout


def test_a_function_that_raises_is_reported_with_its_error(tmp_path: Path) -> None:
    """An unexpected failure fails the test, naming the event, the action and the exception."""
    tests = """
    tests:
      - name: a negative price
        events:
          - {topic: trade/acme, id: e1, payload: {id: t9, price: -1, qty: 20}}
        expect:
          rules:
            archive: {matched: true}
    """
    result = run_tests(make_app(tmp_path, tests))
    assert result.returncode == 1
    assert (
        "  rules.check.error: unexpected failure: event e1 (trade/acme): function flag:"
        " function 'flag' raised ValueError: negative price in t9"
    ) in result.stdout.splitlines()


def test_an_expected_failure_passes_and_runs_the_error_action(tmp_path: Path) -> None:
    """`error:` expects the failure; the rule's error action runs, its event published."""
    tests = """
    tests:
      - name: a negative price goes to the error action
        events:
          - {topic: trade/acme, id: e1, payload: {id: t9, price: -1, qty: 20}}
        expect:
          rules:
            check: {matched: true, error: negative price in t9}
            keep-flag: {matched: false}
          published:
            - topic: errors/check
              payload:
                ruleName: check
                topic: trade/acme
                eventId: e1
                clientId: null
                principal: null
                attempts: 1
                failures:
                  - failedAction: function
                    failedResource: flag
                    errorMessage: "function 'flag' raised ValueError: negative price in t9"
                payload: {id: t9, price: -1, qty: 20}
    """
    result = run_tests(make_app(tmp_path, tests))
    assert result.returncode == 0, result.stdout


def test_nothing_outside_is_touched(tmp_path: Path) -> None:
    """No webhook is posted, no data dir is made, no backend named in the environment is used."""
    receiver = Receiver()
    try:
        app = make_app(tmp_path, PASSING, webhook=receiver.url)
        before = sorted(p.relative_to(app) for p in app.rglob("*"))
        result = run_tests(
            app,
            env={
                "RULEBUS_DATA_DIR": str(tmp_path / "data"),
                "RULEBUS_BUS": "nats://127.0.0.1:9",
                "RULEBUS_TABLES": "postgresql://127.0.0.1:9/nothing",
                "RULEBUS_OBJECTS": "s3://",
            },
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert receiver.attempts == 0
    finally:
        receiver.close()
    assert not (tmp_path / "data").exists()
    assert sorted(p.relative_to(app) for p in app.rglob("*")) == before


def test_a_broken_test_file_is_one_line_with_file_line_and_key(tmp_path: Path) -> None:
    """A misspelt key exits 2 with where it is, before any test runs."""
    app = make_app(tmp_path, PASSING.replace("        keep-flag:", "        keep-flog:"))
    result = run_tests(app)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: tests/trades.yaml:11: tests[0].expect.rules.keep-flog: the app has no rule"
        " 'keep-flog' (rules: archive, check, keep-flag)\n"
    )


def test_invalid_yaml_a_bad_matcher_and_a_missing_app_exit_2(tmp_path: Path) -> None:
    """Broken YAML, an unknown matcher kind and a missing app each get one line and exit 2."""
    app = make_app(tmp_path, PASSING.replace("payload: {id: t1,", "payload: {id: t1"))
    result = run_tests(app)
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)
    assert result.stderr.startswith("error: tests/trades.yaml:7: (yaml): invalid YAML")
    (app / "tests" / "trades.yaml").write_text(PASSING.replace("$any: uuid}, at", "$any: uid}, at"))
    result = run_tests(app)
    assert result.returncode == 2
    assert "tests[0].expect.rules.keep-flag.output.ref.$any: expected one of anything," in (
        result.stderr
    )
    result = cli("test", str(tmp_path / "missing"))
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)
    assert "/missing: no such app folder" in result.stderr


def test_json_output_for_ci(tmp_path: Path) -> None:
    """--json gives counts, and per test its differences with paths and the diff."""
    app = make_app(tmp_path, PASSING.replace("total: 100}]", "total: 101}]"))
    result = run_tests(app, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["passed"], report["failed"]) == (0, 1)
    (test,) = report["tests"]
    assert test["name"] == "a big trade is archived, flagged, stored and notified"
    assert test["differences"] == [
        {"path": "tables.trades[0].total", "message": "expected 101, got 100"}
    ]
    assert '+        "total": 100' in test["diff"]


def test_k_runs_only_the_tests_whose_name_contains_the_text() -> None:
    """-k selects by name; a text no test's name contains is an error, not a pass."""
    result = cli("test", str(EXCHANGE), "-k", "posted twice", "-v")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "1 passed (1 test in 1 file)"
    assert "the same id posted twice is archived once" in result.stdout
    result = cli("test", str(EXCHANGE), "-k", "no such test")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "error: no test's name contains 'no such test'\n"
