"""The table action's DynamoDB (v1) options, on SQLite and on PostgreSQL tables: key
fields from templates, the output under payload_field, number keys, and the
load-time checks against the table's declared key."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.helpers import Server, cli, wait_until

APP = """
retry: {attempts: 2, backoff: 50ms, max_backoff: 50ms}
tables:
  readings: {key: [device, ts]}
  latest: {key: [device]}
  whole: {key: [device]}
rules:
  store:
    sql: SELECT temp, unit FROM 'sensors/+/reading'
    actions:
      - table:
          name: readings
          hash_key_field: device
          hash_key_value: ${topic(2)}
          range_key_field: ts
          range_key_value: ${seq}
          range_key_type: NUMBER
          payload_field: reading
      - table: {name: latest, hash_key_field: device, hash_key_value: "${topic(2)}"}
  whole-item:
    sql: SELECT topic(2) AS device, temp FROM 'sensors/+/reading'
    actions:
      - table: {name: whole}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def tables(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment that puts the app's tables in SQLite, or in PostgreSQL."""
    if request.param == "sqlite":
        yield {}
    else:
        yield {"RULEBUS_TABLES": request.getfixturevalue("postgres_url")}


def write_app(tmp_path: Path, text: str) -> Path:
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "rulebus.yaml").write_text(textwrap.dedent(text))
    return app


def test_items_are_built_from_key_templates_and_the_payload_field(
    tmp_path: Path, tables: dict[str, str]
) -> None:
    """Each event becomes {device, ts, reading: output}: the range key a number, a
    repeated event the same row; without the options the output is the item, as before;
    a key that cannot be a number is dead-lettered at once."""
    server = Server(write_app(tmp_path, APP), tmp_path / "data", tables).start()
    try:
        events = [
            ("d1", {"id": "e1", "temp": 20, "unit": "C", "seq": 1}),
            ("d1", {"id": "e2", "temp": 21, "unit": "C", "seq": 2}),
            ("d2", {"id": "e3", "temp": 5, "unit": "C", "seq": "10"}),
            ("d1", {"id": "e1", "temp": 20, "unit": "C", "seq": 1}),  # a repeat: one row
        ]
        for device, body in events:
            server.post(f"/topics/sensors/{device}/reading", body)
        server.post("/topics/sensors/d3/reading", {"id": "e4", "temp": 1, "seq": "soon"})
        wait_until(lambda: len(server.scan("readings")) == 3 and server.dead_letters(), what="rows")
        readings = sorted(server.scan("readings"), key=lambda r: (r["device"], r["ts"]))
        assert readings == [
            {"device": "d1", "ts": 1, "reading": {"temp": 20, "unit": "C"}},
            {"device": "d1", "ts": 2, "reading": {"temp": 21, "unit": "C"}},
            {"device": "d2", "ts": 10, "reading": {"temp": 5, "unit": "C"}},
        ]
        latest = {row["device"]: row for row in server.scan("latest")}
        assert latest["d2"] == {"device": "d2", "payload": {"temp": 5, "unit": "C"}}
        assert latest["d1"]["payload"]["temp"] in (20, 21)
        whole = {row["device"]: row for row in server.scan("whole")}
        assert whole["d2"] == {"device": "d2", "temp": 5}

        (letter,) = server.dead_letters()
        assert letter["attempts"] == 1
        (failure,) = letter["failures"]
        assert failure["failedResource"] == "readings"
        assert failure["errorMessage"] == "key field 'ts' is a number, and rendered 'soon'"
    finally:
        server.stop()


def check_error(tmp_path: Path, table: str) -> str:
    app = write_app(
        tmp_path,
        f"""
        tables:
          readings: {{key: [device, ts]}}
          latest: {{key: [device]}}
        rules:
          store:
            sql: SELECT * FROM 'sensors/+'
            actions:
              - table: {table}
        """,
    )
    result = cli("check", str(app))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "rulebus.yaml:" in line, line
    return line


def test_the_key_fields_must_be_the_tables_declared_key(tmp_path: Path) -> None:
    cases = [
        (
            "{name: readings, hash_key_field: ts, hash_key_value: x}",
            "hash_key_field: table 'readings' has key ['device', 'ts']: its hash key is"
            " 'device', not 'ts'",
        ),
        (
            "{name: readings, hash_key_field: device, hash_key_value: x}",
            "give range_key_field: ts and range_key_value",
        ),
        (
            "{name: latest, hash_key_field: device, hash_key_value: x, range_key_field: ts,"
            " range_key_value: y}",
            "its range key is not declared, not 'ts'",
        ),
        ("{name: latest, hash_key_field: device}", "hash_key_value: required"),
        ("{name: latest, payload_field: p}", "payload_field: goes with hash_key_field"),
        (
            "{name: latest, hash_key_field: device, hash_key_value: x, payload_field: device}",
            "payload_field: 'device' is a key field",
        ),
        (
            "{name: latest, hash_key_field: device, hash_key_value: x, hash_key_type: BLOB}",
            "hash_key_type: expected STRING or NUMBER",
        ),
        (
            "{name: latest, hash_key_field: device, hash_key_value: x, key: {device: y}}",
            "give either key or hash_key_field",
        ),
    ]
    for table, expected in cases:
        line = check_error(tmp_path, table)
        assert expected in line, (table, line)
        assert "rules.store.actions[0].table." in line, line
