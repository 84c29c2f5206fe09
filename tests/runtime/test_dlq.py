"""``rulebus dlq``: listing with filters, redrive and purge by id or all, through the real
CLI on each set of backends."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.runtime.helpers import Receiver, Server, child_env, wait_until

APP = """
egress: {{allow: [127.0.0.0/8]}}
notifications:
  n:
    subscribers:
      - webhook: {{url: "{url}", timeout: 2s}}
rules:
  alerts:
    sql: SELECT * FROM 'alerts/+'
    actions:
      - notify: {{topic: n}}
  jobs:
    sql: SELECT * FROM 'jobs/+'
    actions:
      - notify: {{topic: n}}
"""


def three_dead_letters(tmp_path: Path, env: dict[str, str] | None) -> tuple[Server, list[str]]:
    """A stopped server whose webhook answered 400: alerts/disk, alerts/cpu and jobs/a
    are dead letters (in that order of event ids)."""
    receiver = Receiver(status=400)
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(APP.format(url=receiver.url)))
    server = Server(app, tmp_path / "data", env).start()
    try:
        ids = [
            server.post(f"/topics/{topic}", {"n": n}).json()["id"]
            for n, topic in enumerate(("alerts/disk", "alerts/cpu", "jobs/a"))
        ]
        wait_until(lambda: len(server.dead_letters()) == 3, what="three dead letters")
    finally:
        server.stop()
        receiver.close()
    return server, ids


def listed(server: Server, *filters: str) -> list[dict[str, Any]]:
    out = server.cli("dlq", "ls", *filters, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_list_filter_redrive_and_purge(tmp_path: Path, backends: dict[str, str]) -> None:
    """``ls`` filters by event, rule and topic; ids that are no dead letter are one line
    naming them all, exit 1, and nothing is done; a purged letter is gone, and its event's
    trace says so; ``purge --all`` takes what the filters choose."""
    server, (disk, cpu, job) = three_dead_letters(tmp_path, backends)
    letters = {letter["event_id"]: letter["id"] for letter in listed(server)}
    assert set(letters) == {disk, cpu, job}

    assert [x["event_id"] for x in listed(server, "--event", cpu)] == [cpu]
    assert [x["topic"] for x in listed(server, "--rule", "jobs")] == ["jobs/a"]
    assert sorted(x["topic"] for x in listed(server, "--topic", "alerts/+")) == [
        "alerts/cpu",
        "alerts/disk",
    ]
    assert listed(server, "--topic", "alerts/+", "--rule", "jobs") == []
    bad = server.cli("dlq", "ls", "--topic", "a/#/b")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("error: ")

    unknown = max(letters.values()) + 1000
    for verb in ("redrive", "purge"):
        one = server.cli("dlq", verb, str(unknown))
        assert (one.returncode, one.stdout) == (1, "")
        assert one.stderr == f"error: no dead letter with id {unknown}\n"
        mixed = server.cli("dlq", verb, str(letters[job]), str(unknown + 1), str(unknown))
        assert mixed.returncode == 1
        assert mixed.stderr == f"error: no dead letters with ids {unknown}, {unknown + 1}\n"
    assert len(listed(server)) == 3, "nothing was redriven or purged"

    purged = server.cli("dlq", "purge", str(letters[job]))
    assert (purged.returncode, purged.stdout) == (0, "purged: 1\n")
    assert listed(server, "--event", job) == []
    again = server.cli("dlq", "redrive", str(letters[job]))
    assert again.stderr == f"error: no dead letter with id {letters[job]}\n"
    trace = json.loads(server.cli("trace", job, "--json", check=True).stdout)
    (rule,) = [r for r in trace["rules"] if r["rule"] == "jobs"]
    assert rule["status"] == "purged" and trace["dead_letters"] == []
    assert rule["attempts"][-1]["kind"] == "purge"
    text = server.cli("trace", job, check=True).stdout
    assert "+ jobs: purged" in text and "dead letter purged at " in text

    server.env["RULEBUS_PROGRESS_EVERY"] = "0"
    everything = server.cli("dlq", "purge", "--all", "--topic", "alerts/disk")
    assert (everything.returncode, everything.stdout) == (0, "purged: 1\n")
    assert everything.stderr.splitlines()[-1].startswith("dlq purge: purged 1 in ")
    assert [x["event_id"] for x in listed(server)] == [cpu]


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    """Neither ids nor --all, both, or filters with ids: one line, exit code 2."""
    data = tmp_path / "data"
    data.mkdir()
    for args in (
        ["purge"],
        ["redrive"],
        ["purge", "1", "--all"],
        ["purge", "1", "--rule", "r"],
        ["redrive", "1", "--event", "e"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "rulebus", "dlq", *args, "--data-dir", str(data)],
            capture_output=True,
            text=True,
            env=child_env(),
        )
        assert result.returncode == 2, args
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: "), args


def on_terminal(server: Server, args: list[str], answer: bytes) -> tuple[int, str]:
    """``rulebus ARGS`` on a pseudo-terminal that answers ``answer`` to the question;
    returns the exit code and all that was written to it."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rulebus", *args, "--data-dir", str(server.data_dir)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=server.env,
    )
    os.close(terminal)
    seen = b""
    while b"?" not in seen:
        ready, _, _ = select.select([controller], [], [], 30)
        assert ready, f"no question asked: {seen!r}"
        seen += os.read(controller, 4096)
    os.write(controller, answer)
    code = proc.wait(30)
    try:
        while chunk := os.read(controller, 4096):
            seen += chunk
    except OSError:
        pass  # the child closed the terminal
    os.close(controller)
    return code, seen.decode()


def test_purge_all_asks_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal ``purge --all`` asks first and a no purges nothing; ``--yes`` and a
    non-terminal do not ask."""
    server, _ = three_dead_letters(tmp_path, None)
    code, seen = on_terminal(server, ["dlq", "purge", "--all", "--rule", "alerts"], b"n\n")
    assert "purge 2 dead letters for good? [y/N]" in seen
    assert code == 1 and "error: nothing purged" in seen
    assert len(listed(server)) == 3
    code, seen = on_terminal(server, ["dlq", "purge", "--all", "--rule", "alerts"], b"y\n")
    assert code == 0 and "purged: 2" in seen
    assert [x["topic"] for x in listed(server)] == ["jobs/a"]
    result = server.cli("dlq", "purge", "--all", "--yes")
    assert (result.returncode, result.stdout) == (0, "purged: 1\n")
    assert listed(server) == []
