"""User code and runaway rules cannot stop the engine or fill the disk."""

import textwrap
from pathlib import Path

from tests.runtime.helpers import Server, wait_until

APP = """
tables:
  seen:
    key: [id]
functions:
  quitter:
    handler: handlers:quit
    timeout: 2s
retry:
  attempts: 2
  backoff: 50ms
  max_backoff: 100ms
rules:
  call-quitter:
    sql: SELECT * FROM 'jobs/quit'
    actions:
      - function: {name: quitter}
  echo:
    sql: SELECT * FROM 'loop/#'
    actions:
      - republish: {topic: "loop/${topic(2)}"}
  archive:
    sql: SELECT * FROM 'jobs/+'
    actions:
      - table: {name: seen}
"""

HANDLERS = """
import sys


def quit(event, ctx):
    sys.exit(3)
"""


def make_app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(APP))
    (app / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    return app


def test_a_handler_that_calls_sys_exit_fails_its_delivery_only(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """sys.exit in a function is an action failure: retried, dead-lettered, and the
    engine goes on with other events."""
    server = Server(make_app(tmp_path), tmp_path / "data", backends).start()
    workers = wait_until(lambda: len(server.worker_pids()) == 2 and server.worker_pids())
    server.post("/topics/jobs/quit", {"id": "q-1"})
    server.post("/topics/jobs/other", {"id": "o-1"})
    letters = wait_until(server.dead_letters, what="a dead letter")
    assert letters[0]["rule"] == "call-quitter"
    assert "SystemExit" in letters[0]["failures"][0]["errorMessage"]
    wait_until(lambda: {row["id"] for row in server.scan("seen")} == {"q-1", "o-1"}, what="rows")
    assert server.worker_pids() == workers  # never restarted: none died


def test_a_rule_that_republishes_into_its_own_filter_stops_after_16_hops(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """A loop the loader cannot see is cut by the hop limit, and dead-lettered."""
    server = Server(make_app(tmp_path), tmp_path / "data", backends).start()
    server.post("/topics/loop/a", {"n": 1})
    letters = wait_until(server.dead_letters, what="a dead letter")
    assert "passed through 16 rules" in letters[0]["failures"][0]["errorMessage"]
    wait_until(server.idle, what="idle")
    assert server.stats()["head"] == 17  # the original and 16 republished copies
