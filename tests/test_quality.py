"""The code base stays lint-clean and type-checked: CI fails otherwise."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["src", "tests", "bench", "examples"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_finds_nothing() -> None:
    """ruff check passes with the project's configuration."""
    result = run("ruff", "check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_formatted() -> None:
    """ruff format has nothing to change."""
    result = run("ruff", "format", "--check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """mypy --strict passes on the package."""
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_cli_command_is_documented() -> None:
    """Each command the CLI has appears in the CLI reference."""
    from rulebus.cli import main

    reference = (ROOT / "docs" / "app-file.md").read_text()
    names = []
    for name, command in main.commands.items():
        sub = getattr(command, "commands", None)
        names += [f"rulebus {name} {s}" for s in sub] if sub else [f"rulebus {name}"]
    missing = [n for n in names if n not in reference]
    assert not missing, f"undocumented commands: {missing}"
