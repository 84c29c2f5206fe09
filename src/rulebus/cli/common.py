"""What every command shares: the data-dir option and one-line errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from rulebus.errors import BadInput, RulebusError, SqlError, TemplateError

DEFAULT_DATA_DIR = "rulebus-data"

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("RULEBUS_DATA_DIR", DEFAULT_DATA_DIR),
    show_default=f"$RULEBUS_DATA_DIR or ./{DEFAULT_DATA_DIR}",
    help="Where the bus, tables and buckets live.",
)


def exit_code(exc: RulebusError) -> int:
    if isinstance(exc, SqlError | BadInput | TemplateError):
        return 2
    return 1


class Group(click.Group):
    """A group whose commands turn rulebus errors into ``error: …`` and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RulebusError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exit_code(exc))
        except KeyboardInterrupt:
            sys.exit(130)


def require_data_dir(data_dir: Path) -> Path:
    if not data_dir.is_dir():
        raise RulebusError(f"no data directory at {data_dir} (use --data-dir)")
    return data_dir
