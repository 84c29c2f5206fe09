"""``rulebus keys``: create, list and revoke the API keys of an app's deployment."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click

from rulebus import codec, keys
from rulebus.backends.base import KeyStore
from rulebus.backends.registry import is_embedded, open_store
from rulebus.cli.common import bus_option, data_dir_option, require_data_dir

T = TypeVar("T")


def _with_keys(data_dir: Path, bus: str, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store: KeyStore = open_store("keys", bus, data_dir)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


@click.group("keys")
def keys_group() -> None:
    """Manage API keys (they live with the event log: --bus and --data-dir)."""


@keys_group.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(list(keys.SCOPES)),
    help="What the key may do; repeat for several.",
)
@click.option(
    "--topics",
    "topics",
    multiple=True,
    metavar="FILTER",
    help="Topic filters the key may publish to (MQTT syntax; repeat for several).  [default: #]",
)
@click.option("--rate", help="Requests allowed per second (10, 10/s, 600/m, 1000/h).")
@click.option(
    "--burst",
    type=click.IntRange(1),
    help="Requests allowed at once.  [default: the rate per second, at least 1]",
)
@data_dir_option
@bus_option
def keys_create(
    name: str,
    scopes: tuple[str, ...],
    topics: tuple[str, ...],
    rate: str | None,
    burst: int | None,
    data_dir: Path,
    backend_bus: str,
) -> None:
    """Create key NAME and print it, once: it is stored only as a hash."""
    per_second = keys.parse_rate(rate) if rate is not None else None
    if burst is not None and per_second is None:
        raise click.UsageError("--burst needs --rate")
    key, lookup, digest = keys.new_key()
    record = keys.ApiKey(
        name=keys.check_name(name),
        lookup=lookup,
        digest=digest,
        scopes=keys.check_scopes(scopes),
        topics=keys.check_topics(topics),
        rate=per_second,
        burst=burst or (max(1, math.ceil(per_second)) if per_second else 0),
        created=int(time.time() * 1000),
    )
    if is_embedded(backend_bus):
        data_dir.mkdir(parents=True, exist_ok=True)
    _with_keys(data_dir, backend_bus, lambda store: store.create(record))
    click.echo(key)
    if sys.stdout.isatty():
        click.echo("Keep it now: it cannot be shown again.", err=True)


@keys_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@data_dir_option
@bus_option
def keys_ls(as_json: bool, data_dir: Path, backend_bus: str) -> None:
    """List keys: names, scopes, topics, rate, creation and last use (never the key)."""
    if is_embedded(backend_bus):
        require_data_dir(data_dir)
    found = _with_keys(data_dir, backend_bus, lambda store: store.all())
    if as_json:
        for key in found:
            click.echo(
                codec.dumps_str(
                    {
                        "name": key.name,
                        "scopes": list(key.scopes),
                        "topics": list(key.topics),
                        "rate": key.rate,
                        "burst": key.burst if key.rate else None,
                        "created": _time(key.created),
                        "last_used": _time(key.last_used),
                    }
                )
            )
        return
    rows = [("NAME", "SCOPES", "TOPICS", "RATE", "CREATED", "LAST USED")]
    for key in found:
        rows.append(
            (
                key.name,
                ",".join(key.scopes),
                ",".join(key.topics),
                key.describe_rate(),
                _time(key.created) or "-",
                _time(key.last_used) or "never",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@keys_group.command("revoke")
@click.argument("name")
@data_dir_option
@bus_option
def keys_revoke(name: str, data_dir: Path, backend_bus: str) -> None:
    """Revoke key NAME; every API process refuses it within a second or so."""
    if is_embedded(backend_bus):
        require_data_dir(data_dir)
    _with_keys(data_dir, backend_bus, lambda store: store.revoke(name))
    click.echo(f"revoked: {name}")


def _time(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
