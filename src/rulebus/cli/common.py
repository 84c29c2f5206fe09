"""What every command shares: the data-dir option and one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from rulebus.backends.registry import is_embedded
from rulebus.errors import BadInput, RulebusError, SqlError, TemplateError
from rulebus.runtime import Backends

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DATA_DIR = "rulebus-data"

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("RULEBUS_DATA_DIR", DEFAULT_DATA_DIR),
    show_default=f"$RULEBUS_DATA_DIR or ./{DEFAULT_DATA_DIR}",
    help="Where the bus, tables and buckets live.",
)


def _backend(kind: str, env: str, default: str, what: str) -> Callable[[F], F]:
    return click.option(
        f"--{kind}",
        "backend_" + kind,
        default=lambda: os.environ.get(env, default),
        show_default=f"${env} or {default}",
        metavar="URL",
        help=what,
    )


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, in the order given."""

    def decorate(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return decorate


bus_option = _backend("bus", "RULEBUS_BUS", "sqlite", "The event log: sqlite, or nats://host:port.")

# ``--bus``, ``--tables`` and ``--objects``, each also read from the environment.
backends_option = options(
    bus_option,
    _backend("tables", "RULEBUS_TABLES", "sqlite", "Tables: sqlite, or postgresql://..."),
    _backend("objects", "RULEBUS_OBJECTS", "file", "Buckets: file, or s3://."),
)


def backends(values: dict[str, Any]) -> Backends:
    """The Backends that ``backends_option`` read, taken out of a command's arguments."""
    return Backends(
        bus=values.pop("backend_bus"),
        tables=values.pop("backend_tables"),
        objects=values.pop("backend_objects"),
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
            # Some of click's messages list choices one per line.
            message = " ".join(exc.format_message().split())
            click.echo(f"error: {message}{hint}", err=True)
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


def require_data_dir(data_dir: Path, chosen: Backends | None = None) -> Path:
    """The data directory, which must exist where an embedded backend keeps data in it."""
    embedded = chosen is None or any(
        is_embedded(url) for url in (chosen.bus, chosen.tables, chosen.objects)
    )
    if embedded and not data_dir.is_dir():
        raise RulebusError(f"no data directory at {data_dir} (use --data-dir)")
    return data_dir
