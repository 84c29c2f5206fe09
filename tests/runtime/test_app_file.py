"""``rulebus check`` validates an app file and points to the file, line and key of each error."""

import textwrap
from pathlib import Path

import pytest

from tests.runtime.helpers import EXCHANGE, cli

GOOD = """\
tables:
  events:
    key: [id]
rules:
  archive:
    sql: SELECT * FROM 'event/+'
    actions:
      - table: {name: events}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "rulebus.yaml").write_text(textwrap.dedent(text))
    return tmp_path


def test_the_exchange_example_checks_clean() -> None:
    """The shipped example is valid and its summary lists what it declares."""
    result = cli("check", str(EXCHANGE))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "rule check-buys: event/buy -> function" in result.stdout


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (GOOD + "extra: 1\n", 9, "extra", "unknown key"),
        (GOOD.replace("key: [id]", "keys: [id]"), 3, "tables.events.keys", "did you mean 'key'"),
        (GOOD.replace("SELECT *", "SELEKT *"), 6, "rules.archive.sql", "unexpected 'SELEKT'"),
        (
            GOOD.replace("name: events", "name: evnts"),
            8,
            "rules.archive.actions[0].table.name",
            "unknown table 'evnts'",
        ),
        (
            GOOD.replace("- table:", "- tabel:"),
            8,
            "rules.archive.actions[0].tabel",
            "did you mean 'table'",
        ),
        (
            GOOD.replace("sql: SELECT", "sql_version: 1999-01-01\n    sql: SELECT"),
            6,
            "rules.archive.sql_version",
            "unknown SQL version",
        ),
        (
            GOOD + "functions:\n  f:\n    handler: nosuchmodule:run\n",
            11,
            "functions.f.handler",
            "cannot import module 'nosuchmodule'",
        ),
        (GOOD + "retry:\n  backoff: soon\n", 10, "retry.backoff", "expected a positive duration"),
        (GOOD + "buckets: [Bad_Bucket]\n", 9, "buckets[0]", "invalid bucket name"),
        (GOOD + "rules2: {}\n", 9, "rules2", "did you mean 'rules'"),
        (
            GOOD.replace("actions:\n      - table: {name: events}", "actions: []"),
            7,
            "rules.archive.actions",
            "expected a list of actions",
        ),
        ("tables: [\n", 2, "(yaml)", "invalid YAML"),
        ("tables: &a\n  t: *a\n", 2, "(yaml)", "aliases"),
        (
            GOOD.replace("    key: [id]\n", "    key: [id]\n  Events:\n    key: [id]\n", 1),
            4,
            "tables.Events",
            "not case-sensitive",
        ),
        (GOOD.replace("key: [id]", "key: [id, ID]"), 3, "tables.events.key", "repeat"),
        (
            GOOD + "api:\n  routes:\n    - {path: /e, topic: 'event/+/${type}'}\n",
            11,
            "api.routes[0].topic",
            "wildcards",
        ),
        (
            GOOD + "api:\n  routes:\n    - {path: /healthz, topic: e}\n",
            11,
            "api.routes[0].path",
            "already taken",
        ),
        (
            GOOD.replace("- table: {name: events}", '- object: {bucket: bk1, key: "../${id}"}')
            + "buckets: [bk1]\n",
            8,
            "rules.archive.actions[0].object.key",
            "'..'",
        ),
        (
            GOOD.replace("- table: {name: events}", "- republish: {topic: event/x}"),
            8,
            "rules.archive.actions[0].republish.topic",
            "every event would loop",
        ),
        (
            GOOD + "notifications:\n  n:\n    subscribers:\n      - webhook: {url: 'http://'}\n",
            12,
            "notifications.n.subscribers[0].webhook.url",
            "with a host",
        ),
        (
            GOOD + "api:\n  routes:\n    - {path: /e, topic: 'event/${a/b}'}\n",
            11,
            "api.routes[0].topic",
            "may not use '/' inside",
        ),
        (
            GOOD + "retry: {backoff: 5s, max_backoff: 1s}\n",
            9,
            "retry.max_backoff",
            "shorter than backoff",
        ),
        (
            GOOD.replace("    actions:", "    partition_key: ${a +}\n    actions:"),
            7,
            "rules.archive.partition_key",
            "invalid template",
        ),
        (
            GOOD.replace("    actions:", "    partition_key: ${a}\n    actions:")
            + "  other:\n    sql: SELECT * FROM 'event/#'\n    partition_key: ${b}\n"
            + "    actions:\n      - table: {name: events}\n",
            12,
            "rules.other.partition_key",
            "both rules can match the same topic",
        ),
    ],
)
def test_errors_name_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    """Each error is one line: file:line: key: what is wrong, with exit code 2."""
    app = write(tmp_path, text)
    result = cli("check", str(app))
    assert result.returncode == 2
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"error: {app / 'rulebus.yaml'}:{line}: {key}: "), err
    assert message in err


def test_a_missing_app_file_is_one_line(tmp_path: Path) -> None:
    """Pointing at a folder without rulebus.yaml says so."""
    result = cli("check", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'rulebus.yaml'}: file not found"


def test_a_missing_app_folder_is_one_line(tmp_path: Path) -> None:
    """A path that does not exist is named as the app folder it should be."""
    result = cli("up", str(tmp_path / "nosuch"), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'nosuch'}: no such app folder (an app is a folder with a rulebus.yaml)"
    )


def test_a_nul_byte_in_the_file_is_one_line(tmp_path: Path) -> None:
    """Unreadable YAML is an error with a position, not a traceback."""
    (tmp_path / "rulebus.yaml").write_bytes(GOOD.encode() + b"x: \x00\n")
    result = cli("check", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'rulebus.yaml'}")
    assert "invalid YAML" in result.stderr and "Traceback" not in result.stderr


def test_an_unset_secret_variable_is_a_warning(tmp_path: Path) -> None:
    """A webhook that would go out unsigned is valid, but check says so."""
    app = write(
        tmp_path,
        GOOD + "notifications:\n  n:\n    subscribers:\n      - webhook:"
        " {url: 'http://127.0.0.1:9/h', secret_env: RULEBUS_TEST_UNSET_SECRET}\n",
    )
    result = cli("check", str(app))
    assert result.returncode == 0
    assert "RULEBUS_TEST_UNSET_SECRET is not set" in result.stderr
