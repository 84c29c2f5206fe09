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
from rulebus.cli.common import backends, backends_option, data_dir_option, require_data_dir
from rulebus.cli.progress import Progress
from rulebus.runtime import Backends, stores
from rulebus.template import load_app

T = TypeVar("T")

REDRIVE_CHUNK = 100  # dead letters per redrive with --all


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
    """Inspect and redrive dead letters."""


@dlq.command("ls")
@data_dir_option
@backends_option
def dlq_ls(data_dir: Path, **chosen: Any) -> None:
    """Print dead letters as JSON lines."""

    async def work(bus: Any, tables: Any, objects: Any) -> None:
        for letter in await bus.dead_letters():
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


@dlq.command("redrive")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Redrive every dead letter.")
@data_dir_option
@backends_option
def dlq_redrive(ids: tuple[int, ...], everything: bool, data_dir: Path, **chosen: Any) -> None:
    """Send dead letters back to be retried by the running app."""
    if not ids and not everything:
        raise click.UsageError("give dead-letter ids, or --all")

    async def work(bus: Any, tables: Any, objects: Any) -> int:
        if not everything:
            return await bus.redrive(list(ids))  # type: ignore[no-any-return]
        # All of them, in chunks, so a long redrive shows its progress.
        letters = [letter.id for letter in await bus.dead_letters()]
        progress = Progress("dlq redrive", len(letters), "dead letters")
        count = 0
        for start in range(0, len(letters), REDRIVE_CHUNK):
            count += await bus.redrive(letters[start : start + REDRIVE_CHUNK])
            progress.advance(min(REDRIVE_CHUNK, len(letters) - start))
        progress.finish(f"redriven {count}")
        return count

    count = _with_stores(data_dir, backends(chosen), work)
    click.echo(f"redriven: {count}")
