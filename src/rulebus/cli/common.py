"""What every command shares: the data-dir option and one-line errors."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Sequence
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

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        **extra: Any,
    ) -> Any:
        # click's own usage errors span several lines; ours are one.
        extra.pop("standalone_mode", None)
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (try '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RulebusError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exit_code(exc))
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:
            # The reader went away (``| head``): stop quietly, like other tools.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except sqlite3.Error as exc:
            click.echo(f"error: database: {exc}", err=True)
            sys.exit(1)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("RULEBUS_DEBUG"):
                raise
            click.echo(
                f"error: unexpected {type(exc).__name__}: {exc} (RULEBUS_DEBUG=1 shows the"
                " traceback)",
                err=True,
            )
            sys.exit(1)


def require_data_dir(data_dir: Path) -> Path:
    if not data_dir.is_dir():
        raise RulebusError(f"no data directory at {data_dir} (use --data-dir)")
    return data_dir
