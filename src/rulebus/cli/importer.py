"""``rulebus import aws``: an app folder made from AWS templates."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rulebus.importers.aws import REPORT, import_aws


@click.group("import")
def import_group() -> None:
    """Make an app folder from another system's definitions."""


@import_group.command("aws")
@click.argument(
    "templates", metavar="TEMPLATE...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The app folder to write (refused if it is not empty, unless --force).",
)
@click.option("--force", is_flag=True, help="Write into a folder that is not empty.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def aws(templates: tuple[Path, ...], out: Path, force: bool, as_json: bool) -> None:
    """Convert CloudFormation/SAM templates (YAML or JSON) and `aws iot get-topic-rule`
    JSON into an app folder: rulebus.yaml, a stub per Lambda function, and
    IMPORT-REPORT.md saying what became of every resource."""
    report = import_aws(list(templates), out, force=force)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
        return
    click.echo(f"{out}: {report.summary()}")
    click.echo(f"report: {out / REPORT}")
