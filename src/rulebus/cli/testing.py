"""``rulebus test APP``: run the app's rule tests (``tests/*.yaml``) in memory."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from rulebus.errors import RulebusError
from rulebus.template import load_app
from rulebus.testing import load_cases, run_cases
from rulebus.testing.report import as_json, text


@click.command("test")
@click.argument("app_dir", metavar="APP", type=click.Path(path_type=Path), default=".")
@click.argument("files", metavar="[FILE]...", nargs=-1, type=click.Path(path_type=Path))
@click.option("-k", "select", metavar="TEXT", help="Run only the tests whose name contains TEXT.")
@click.option("--json", "json_output", is_flag=True, help="Print the results as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="List passing tests too.")
def test_command(
    app_dir: Path, files: tuple[Path, ...], select: str | None, json_output: bool, verbose: bool
) -> None:
    """Run the rule tests of APP (its tests/*.yaml, or the FILEs given).

    Rules, actions and functions run for real against in-memory tables and
    buckets; notifications and published events are captured, nothing
    outside is touched. Exits 0 if every test passes, 1 if one fails (with
    a diff of expected against actual), 2 for a malformed test or app file.
    """
    # Importing the app's functions must not leave __pycache__ in its folder.
    sys.dont_write_bytecode = True
    app = load_app(app_dir)
    try:
        cases = load_cases(app, files, select)
    except RulebusError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    results = asyncio.run(run_cases(app, cases))
    click.echo(as_json(results) if json_output else text(results, verbose=verbose))
    sys.exit(0 if all(r.passed for r in results) else 1)
