"""Log lines: text by default, one JSON object per line with ``--log-format json``,
and an access log line per request only with ``--access-log``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.runtime.helpers import (
    EXCHANGE,
    Receiver,
    child_env,
    cli,
    free_port,
    make_key,
    wait_until,
)

APP = """
egress: {{allow: [127.0.0.0/8]}}
retry: {{attempts: 4, backoff: 50ms, max_backoff: 200ms}}
notifications:
  alerts:
    subscribers:
      - webhook: {{url: "{url}", timeout: 2s}}
rules:
  alert:
    sql: SELECT * FROM 'alerts/+'
    actions:
      - notify: {{topic: alerts}}
"""


class Up:
    """``rulebus up`` with its stdout and stderr kept apart, in files."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, key: str, stderr: Path) -> None:
        self.proc, self.url, self.key, self.stderr = proc, url, key, stderr

    def post(self, path: str, body: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.key}"}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=30)

    def dead_letters(self) -> int:
        headers = {"authorization": f"Bearer {self.key}"}
        stats = httpx.get(self.url + "/admin/stats", headers=headers, timeout=30).json()
        return int(stats["dead_letters"])

    def stop(self) -> list[str]:
        """Stop gracefully; returns every line written to stderr."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        return self.stderr.read_text().splitlines()


def dead_letters(data: Path) -> list[dict[str, Any]]:
    """What ``rulebus dlq ls`` lists."""
    out = cli("dlq", "ls", data_dir=data, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


@contextmanager
def up(tmp_path: Path, *options: str, receiver: Receiver | None = None) -> Iterator[Up]:
    """The app with a receiver that answers 400 unless told otherwise: a delivery is
    dead-lettered at once."""
    receiver = receiver or Receiver(status=400)
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(APP.format(url=receiver.url)))
    data = tmp_path / "data"
    key = make_key(data, name="logger")
    port = free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    command = [sys.executable, "-m", "rulebus", "up", str(app), "--data-dir", str(data)]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*command, "--port", str(port), *options],
            stdout=stdout,
            stderr=stderr,
            env=child_env(),
        )
    try:
        wait_until(lambda: "listening on" in out.read_text() or proc.poll() is not None)
        assert proc.poll() is None, err.read_text()
        yield Up(proc, f"http://127.0.0.1:{port}", key, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        receiver.close()


def test_json_lines_carry_the_event_rule_and_action(tmp_path: Path) -> None:
    """With ``--log-format json`` every line on stderr is a JSON object with time, level,
    logger and message; the dead letter's line (from an engine process) names the dead
    letter by the id ``dlq ls`` lists, the event, the rule and the action, and
    ``--access-log`` adds a line per request."""
    with up(tmp_path, "--log-format", "json", "--access-log") as server:
        answer = server.post("/topics/alerts/disk", {"level": 1})
        assert answer.status_code == 202
        event_id = answer.json()["id"]
        wait_until(lambda: server.dead_letters() == 1, what="the dead letter")
        lines = [json.loads(line) for line in server.stop()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    (dead,) = [line for line in lines if line["message"].startswith("dead letter ")]
    assert dead["level"] == "WARNING" and dead["logger"] == "rulebus.engine"
    assert (dead["event_id"], dead["rule"], dead["action"]) == (event_id, "alert", "notify:alerts")
    # The id `rulebus dlq ls` lists, redrive and purge take.
    (listed,) = dead_letters(tmp_path / "data")
    assert dead["dead_letter"] == listed["id"]
    assert dead["message"].startswith(
        f"dead letter {listed['id']}: event {event_id} rule alert after "
    )
    access = [line for line in lines if line["logger"] == "rulebus.access"]
    published = [line for line in access if line["path"] == "/topics/alerts/disk"]
    assert len(published) == 1
    assert published[0]["method"] == "POST" and published[0]["status"] == 202
    assert published[0]["key"] == "logger" and published[0]["duration_ms"] >= 0
    assert {line["path"] for line in access} == {"/topics/alerts/disk", "/admin/stats"}


def test_text_is_the_default_and_no_access_log_without_the_flag(tmp_path: Path) -> None:
    """Without options lines are ``time LEVEL logger: message``, as before, and no
    request is logged."""
    with up(tmp_path) as server:
        event_id = server.post("/topics/alerts/disk", {"level": 2}).json()["id"]
        wait_until(lambda: server.dead_letters() == 1, what="the dead letter")
        lines = server.stop()
    text = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING rulebus\.engine: ")
    assert any(
        text.match(line)
        and re.search(rf"dead letter \d+: event {event_id} rule alert after \d+ attempts: ", line)
        for line in lines
    ), lines
    assert not any("rulebus.access" in line or "/topics/alerts" in line for line in lines)


def test_an_unknown_log_format_is_a_one_line_error(tmp_path: Path) -> None:
    """``--log-format xml`` is refused in one line, exit code 2, on each command."""
    for command in ("up", "api", "worker"):
        result = cli(command, str(EXCHANGE), "--log-format", "xml", data_dir=tmp_path)
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: Invalid value for '--log-format': 'xml' is not one of")


def test_each_retry_is_logged_at_info(tmp_path: Path) -> None:
    """A webhook that answers 503 twice: two lines at INFO, each with the event, rule,
    action, the attempt to come and the error, then the delivery succeeds."""
    receiver = Receiver(fail_first=2)
    with up(tmp_path, "--log-format", "json", receiver=receiver) as server:
        event_id = server.post("/topics/alerts/disk", {"level": 3}).json()["id"]
        wait_until(lambda: len(receiver.received) == 1, what="the third attempt")
        lines = [json.loads(line) for line in server.stop()]
    retried = [line for line in lines if line["message"].startswith("retrying event")]
    assert [line["level"] for line in retried] == ["INFO", "INFO"]
    for attempt, line in enumerate(retried, start=2):
        assert (line["event_id"], line["rule"], line["action"]) == (
            event_id,
            "alert",
            "notify:alerts",
        )
        assert f"attempt {attempt} of 4: " in line["message"]
        assert "503" in line["message"]
    assert not [line for line in lines if line["level"] in ("WARNING", "ERROR")], lines
