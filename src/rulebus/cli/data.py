"""Commands over the data directory: publish, tables, buckets, dead letters."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rulebus import codec
from rulebus.api.ingest import decode, now_ms, topic_event
from rulebus.cli.common import (
    backends,
    backends_option,
    data_dir_option,
    options,
    require_data_dir,
)
from rulebus.cli.progress import Progress
from rulebus.dead_letters import LetterFilter, in_chunks
from rulebus.runtime import Backends, stores
from rulebus.template import load_app

T = TypeVar("T")


def _with_stores(
    data_dir: Path, chosen: Backends, work: Callable[..., Awaitable[T]], app: Path | None = None
) -> T:
    require_data_dir(data_dir, chosen)

    async def main() -> T:
        opened: list[Any] = []
        try:
            for store in stores(data_dir, chosen, app=load_app(app) if app else None):
                await store.open()
                opened.append(store)
            return await work(*opened)
        finally:
            for store in reversed(opened):
                await store.close()

    return asyncio.run(main())


@click.command()
@click.argument("topic")
@click.argument("payload", metavar="JSON")
@click.option(
    "--app",
    "app_dir",
    type=click.Path(path_type=Path),
    help="The app, so that the event gets the partition key its rules declare.",
)
@data_dir_option
@backends_option
def publish(topic: str, payload: str, app_dir: Path | None, data_dir: Path, **chosen: Any) -> None:
    """Publish one JSON event to TOPIC (a running app picks it up)."""
    # Arguments that are not UTF-8 arrive as surrogates; keep the bytes so the
    # JSON decoder reports them.
    event = topic_event(topic, decode(payload.encode("utf-8", "surrogateescape")), "cli", now_ms())
    data_dir.mkdir(parents=True, exist_ok=True)

    async def work(bus: Any, tables: Any, objects: Any) -> None:
        await bus.append([event])

    _with_stores(data_dir, backends(chosen), work, app_dir)
    click.echo(codec.dumps_str({"id": event.id, "topic": event.topic}))


@click.group()
def table() -> None:
    """Read tables."""


@table.command("scan")
@click.argument("name")
@data_dir_option
@backends_option
def table_scan(name: str, data_dir: Path, **chosen: Any) -> None:
    """Print every item of table NAME as JSON lines."""

    async def work(bus: Any, tables: Any, objects: Any) -> None:
        async for item in tables.scan(name):
            sys.stdout.write(codec.dumps_str(item) + "\n")

    _with_stores(data_dir, backends(chosen), work)


@click.group()
def bucket() -> None:
    """Read buckets."""


@bucket.command("ls")
@click.argument("name")
@click.option("--prefix", default="", help="Only keys that start with this.")
@data_dir_option
@backends_option
def bucket_ls(name: str, prefix: str, data_dir: Path, **chosen: Any) -> None:
    """Print the keys in bucket NAME, one per line."""

    async def work(bus: Any, tables: Any, objects: Any) -> None:
        async for key in objects.list(name, prefix):
            sys.stdout.write(key + "\n")

    _with_stores(data_dir, backends(chosen), work)


@bucket.command("get")
@click.argument("name")
@click.argument("key")
@data_dir_option
@backends_option
def bucket_get(name: str, key: str, data_dir: Path, **chosen: Any) -> None:
    """Print the object at KEY in bucket NAME."""

    async def work(bus: Any, tables: Any, objects: Any) -> bytes:
        return await objects.get(name, key)  # type: ignore[no-any-return]

    body = _with_stores(data_dir, backends(chosen), work)
    sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")


@click.group()
def dlq() -> None:
    """Inspect, redrive and purge dead letters."""


# --event, --rule and --topic: which dead letters `ls` lists and `--all` takes.
letter_filter_options = options(
    click.option("--event", "event_id", default="", metavar="ID", help="Only this event's."),
    click.option("--rule", default="", metavar="NAME", help="Only this rule's."),
    click.option(
        "--topic", default="", metavar="FILTER", help="Only those whose topic matches the filter."
    ),
)


@dlq.command("ls")
@letter_filter_options
@data_dir_option
@backends_option
def dlq_ls(event_id: str, rule: str, topic: str, data_dir: Path, **chosen: Any) -> None:
    """Print dead letters as JSON lines: the id that redrive and purge take, and the event."""
    wanted = LetterFilter(event_id, rule, topic)

    async def work(bus: Any, tables: Any, objects: Any) -> None:
        for letter in await wanted.chosen(bus):
            sys.stdout.write(
                codec.dumps_str(
                    {
                        "id": letter.id,
                        "rule": letter.rule,
                        "event_id": letter.event.id,
                        "topic": letter.event.topic,
                        "attempts": letter.attempts,
                        "failed_at": letter.failed_at,
                        "failures": letter.failures,
                        "payload": letter.event.payload,
                    }
                )
                + "\n"
            )

    _with_stores(data_dir, backends(chosen), work)


def _on_letters(verb: str, given: dict[str, Any], confirm: bool = False) -> None:
    """Redrive or purge (``verb``) the dead letters ``given`` names, or with ``--all``
    those its filters choose, and print how many."""
    ids: tuple[int, ...] = given.pop("ids")
    everything: bool = given.pop("everything")
    wanted = LetterFilter(given.pop("event_id"), given.pop("rule"), given.pop("topic"))
    data_dir: Path = given.pop("data_dir")
    if ids and everything:
        raise click.UsageError("give dead-letter ids or --all, not both")
    if not ids and not everything:
        raise click.UsageError("give dead-letter ids, or --all")
    if ids and wanted:
        raise click.UsageError("--event, --rule and --topic choose what --all takes, not ids")
    done = {"redrive": "redriven", "purge": "purged"}[verb]

    async def work(bus: Any, tables: Any, objects: Any) -> int:
        act = getattr(bus, verb)
        if not everything:
            # Unknown ids are NoDeadLetter, and then nothing is done.
            return await act(list(ids))  # type: ignore[no-any-return]
        letters = [letter.id for letter in await wanted.chosen(bus)]
        asking = confirm and letters and sys.stdin.isatty()
        # The question on stderr, like the progress: stdout is for the count.
        question = f"{verb} {len(letters)} dead letters for good?"
        if asking and not click.confirm(question, err=True):
            raise click.ClickException(f"nothing {done}")
        progress = Progress(f"dlq {verb}", len(letters), "dead letters")
        count = await in_chunks(act, letters, progress.advance)
        progress.finish(f"{done} {count}")
        return count

    count = _with_stores(data_dir, backends(given), work)
    click.echo(f"{done}: {count}")


def _letters_command(verb: str) -> Callable[[Callable[..., None]], click.Command]:
    """``dlq VERB ID... | --all`` with the filters that choose what --all takes."""
    choosing = options(
        click.argument("ids", nargs=-1, type=int),
        click.option(
            "--all",
            "everything",
            is_flag=True,
            help=f"{verb.capitalize()} every dead letter (that the filters choose).",
        ),
        letter_filter_options,
        data_dir_option,
        backends_option,
    )

    def decorate(function: Callable[..., None]) -> click.Command:
        return dlq.command(verb)(choosing(function))

    return decorate


@_letters_command("redrive")
def dlq_redrive(**given: Any) -> None:
    """Send dead letters back to be retried by the running app.

    An id that is not a dead letter is an error, and then none is redriven.
    """
    _on_letters("redrive", given)


@_letters_command("purge")
@click.option("--yes", is_flag=True, help="Do not ask to confirm --all on a terminal.")
def dlq_purge(yes: bool, **given: Any) -> None:
    """Delete dead letters for good: their deliveries are not tried again.

    An id that is not a dead letter is an error, and then none is purged.
    """
    _on_letters("purge", given, confirm=not yes)
