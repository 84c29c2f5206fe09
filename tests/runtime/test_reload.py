"""Hot reload: running processes load the app file again, or keep the app they have."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

from rulebus.reload import set_rule_enabled
from tests.runtime.helpers import Server, cli, wait_until

V1 = """
tables:
  rows: {key: [id]}
  copies: {key: [id]}
rules:
  archive:
    sql: SELECT id, 'v1' AS version FROM 'in/#'
    actions: [{table: {name: rows}}]
"""

V2 = """
tables:
  rows: {key: [id]}
  copies: {key: [id]}
  shouts: {key: [id]}
functions:
  shout:
    handler: shout:handle
rules:
  archive:
    # archive's SQL is changed
    sql: SELECT id, 'v2' AS version FROM 'in/#'
    actions: [{table: {name: rows}}]
  copy:
    sql: SELECT id FROM 'in/#'
    actions:
      - table: {name: copies}
  shout:
    sql: SELECT id FROM 'in/#'
    actions: [{function: {name: shout}}]
  echo:
    sql: SELECT * FROM 'shout/#'
    actions: [{table: {name: shouts}}]
"""

V3 = """
tables:
  rows: {key: [id]}
  copies: {key: [id]}
  shouts: {key: [id]}
rules:
  echo:
    sql: SELECT * FROM 'shout/#'
    actions: [{table: {name: shouts}}]
"""

HANDLER = """
def handle(event, ctx):
    ctx.publish("shout/x", {{"id": event["id"], "word": "{word}"}})
"""


def write_app(app: Path, text: str, word: str = "hello") -> None:
    (app / "rulebus.yaml").write_text(textwrap.dedent(text))
    (app / "shout.py").write_text(textwrap.dedent(HANDLER.format(word=word)))


def rows(server: Server, table: str) -> dict[str, dict[str, object]]:
    return {row["id"]: row for row in server.scan(table)}


def test_a_reload_applies_added_changed_disabled_and_removed_rules_to_later_events(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    write_app(app, V1)
    server = Server(app, tmp_path / "data").start()
    try:
        server.post("/topics/in/a", {"id": "a1"})
        wait_until(lambda: "a1" in rows(server, "rows"), what="a1 archived")

        write_app(app, V2)
        result = server.cli("reload")
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        # up itself, then each of its engine processes, says what changed.
        assert len(lines) == 1 + len(server.worker_pids()), lines
        for line in lines:
            assert "reloaded: added copy, shout, echo; changed archive" in line, line
            assert "also changed: functions, tables" in line, line

        server.post("/topics/in/a", {"id": "a2"})
        wait_until(lambda: "a2" in rows(server, "shouts"), what="a2 through every rule")
        assert rows(server, "rows")["a2"]["version"] == "v2"
        assert rows(server, "rows")["a1"]["version"] == "v1"  # not replayed
        assert set(rows(server, "copies")) == {"a2"}  # a new rule sees new events only
        assert rows(server, "shouts")["a2"]["word"] == "hello"

        # Disabling a rule in the file and SIGHUP to up does the same as the command;
        # an edited handler takes effect too.
        set_rule_enabled(app, "copy", False)
        (app / "shout.py").write_text(textwrap.dedent(HANDLER.format(word="again")))
        assert "    enabled: false\n" in (app / "rulebus.yaml").read_text()
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_until(lambda: any("disabled copy" in line for line in server.output), what="disabled")
        wait_until(
            lambda: (
                sum("disabled copy" in line for line in server.output)
                == 1 + len(server.worker_pids())
            ),
            what="every process reloaded",
        )
        server.post("/topics/in/a", {"id": "a3"})
        wait_until(lambda: "a3" in rows(server, "shouts"), what="a3 through every rule")
        assert "a3" not in rows(server, "copies")
        assert rows(server, "shouts")["a3"]["word"] == "again"

        # Removing rules.
        write_app(app, V3, word="again")
        result = server.cli("reload")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "removed archive, copy, shout" in result.stdout, result.stdout
        server.post("/topics/in/a", {"id": "a4"})
        server.post("/topics/shout/x", {"id": "s4"})
        wait_until(lambda: "s4" in rows(server, "shouts"), what="s4 echoed")
        wait_until(server.idle, what="idle")
        assert "a4" not in rows(server, "rows")
        assert server.dead_letters() == []
    finally:
        server.stop()


def test_a_file_that_fails_check_leaves_the_running_app_as_it_was(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    write_app(app, V1)
    server = Server(app, tmp_path / "data").start()
    try:
        broken = V1.replace("SELECT id, 'v1' AS version FROM", "SELEKT id FROM")
        (app / "rulebus.yaml").write_text(textwrap.dedent(broken))

        # The command checks first and reloads nothing.
        result = server.cli("reload")
        assert result.returncode != 0
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: ") and "rulebus.yaml:" in line and "rules.archive" in line
        assert line.endswith("nothing was reloaded")

        # A signal straight to the process: it checks, says why, and goes on.
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_until(
            lambda: any("reload failed" in line for line in server.output), what="the refusal"
        )
        failure = next(line for line in server.output if "reload failed" in line)
        assert "still running the app as it was" in failure and "rulebus.yaml" in failure
        record = [
            json.loads(line)
            for line in (tmp_path / "data" / "run" / "reloads.jsonl").read_text().splitlines()
        ]
        assert record[-1]["ok"] is False and record[-1]["role"] == "up"

        server.post("/topics/in/b", {"id": "b1"})
        wait_until(lambda: "b1" in rows(server, "rows"), what="b1 archived by the old rule")
        assert rows(server, "rows")["b1"]["version"] == "v1"
    finally:
        server.stop()


def test_reload_without_a_running_process_says_so(tmp_path: Path) -> None:
    result = cli("reload", data_dir=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"error: no running rulebus process uses {tmp_path} (use --data-dir)\n"


def test_a_rule_added_by_a_reload_runs_on_either_bus(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """On the distributed bus too, a new rule starts at the log's head when first seen."""
    app = tmp_path / "app"
    app.mkdir()
    write_app(app, V1)
    server = Server(app, tmp_path / "data", backends).start()
    try:
        server.post("/topics/in/a", {"id": "x1"})
        wait_until(lambda: "x1" in rows(server, "rows"), what="x1 archived")
        with_copy = V1 + "  copy:\n    sql: SELECT id FROM 'in/#'\n"
        write_app(app, with_copy + "    actions: [{table: {name: copies}}]\n")
        result = server.cli("reload")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "added copy" in result.stdout
        server.post("/topics/in/a", {"id": "x2"})
        wait_until(lambda: "x2" in rows(server, "copies"), what="x2 copied")
        wait_until(server.idle, what="idle")
        assert set(rows(server, "copies")) == {"x2"}
    finally:
        server.stop()
