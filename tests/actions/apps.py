"""Apps written for the action tests, and what ``rulebus check`` says about them."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.runtime.helpers import cli


def write_app(tmp_path: Path, body: str) -> Path:
    """An app folder whose rulebus.yaml is ``body`` (dedented)."""
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "rulebus.yaml").write_text(textwrap.dedent(body))
    return app


def check_error(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> str:
    """The one line ``rulebus check`` prints for an app it refuses, ``error: FILE:LINE: …``."""
    result = cli("check", str(write_app(tmp_path, body)), env=env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "rulebus.yaml:" in line, line
    return line
