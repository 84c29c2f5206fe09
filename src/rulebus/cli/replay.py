"""``rulebus replay --rule NAME``: run past events from the log through a rule."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from rulebus import codec, metrics
from rulebus.actions.base import Services
from rulebus.backends.base import Appended, Bus
from rulebus.backends.registry import open_store
from rulebus.cli.common import backends, backends_option, data_dir_option, require_data_dir
from rulebus.cli.progress import Progress
from rulebus.cli.trace import app_option, current_app
from rulebus.engine.replay import Counts, Replay, parse_filter, parse_time, replay_id
from rulebus.errors import ActionError, BadInput, Unavailable
from rulebus.events import Event
from rulebus.functions import FunctionHost
from rulebus.notifications import Notifier
from rulebus.runtime import Backends, close_actions, stores
from rulebus.sql import TopicFilter
from rulebus.template.model import App


@click.command("replay")
@click.option("--rule", "rule_name", required=True, help="The rule, as the app file has it now.")
@click.option("--since", help="From this time: ISO 8601, or an age such as 30m, 1h or 2d.")
@click.option("--until", help="Up to this time (same forms).")
@click.option("--topic", "topic_filter", help="Only events whose topic matches this filter.")
@click.option("--dry-run", is_flag=True, help="Run no action: print what the rule would do.")
@app_option("The app whose rule to run, as its file is now.")
@data_dir_option
@backends_option
def replay_command(
    rule_name: str,
    since: str | None,
    until: str | None,
    topic_filter: str | None,
    dry_run: bool,
    app_dir: Path | None,
    data_dir: Path,
    **chosen: Any,
) -> None:
    """Run the events of the log (in a time range) through rule NAME.

    Prints a JSON line per event (with --dry-run, the rule's output and its
    actions; without, each delivery that failed), progress on stderr, and a
    summary. Running the same replay again delivers only what failed before.
    """
    where = backends(chosen)
    require_data_dir(data_dir, where)
    app = current_app(app_dir)
    if app is None:
        raise BadInput("no app: give --app (or run in the app's folder)")
    rule = app.rules.get(rule_name)
    if rule is None:
        known = ", ".join(sorted(app.rules)) or "none"
        raise BadInput(f"no rule {rule_name!r} in {app.file} (rules: {known})")
    since_ms = None if since is None else parse_time(since, "--since")
    until_ms = None if until is None else parse_time(until, "--until")
    if since_ms is not None and until_ms is not None and since_ms > until_ms:
        raise BadInput("--since is after --until")
    topic = None if topic_filter is None else parse_filter(topic_filter)
    run_id = replay_id(rule, since, until, topic_filter)
    # What actions log (a notification's log subscriber) goes to stderr, not among the lines.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    if app.metrics and not dry_run:
        # Into the data directory's metrics, which the API's /metrics adds up.
        metrics.setup(data_dir, owner=False)
    counts = asyncio.run(
        _replay(app, rule_name, data_dir, where, since_ms, until_ms, topic, run_id, dry_run)
    )
    if not dry_run:
        failed = len(counts.failures)
        metrics.count_replay(rule_name, counts.delivered, failed, counts.skipped)
    if counts.errors:
        sys.exit(1)


async def _replay(
    app: App,
    rule_name: str,
    data_dir: Path,
    where: Backends,
    since_ms: int | None,
    until_ms: int | None,
    topic: TopicFilter | None,
    run_id: str,
    dry_run: bool,
) -> Counts:
    if dry_run:
        bus = open_store("bus", where.bus, data_dir)
        await bus.open()
        try:
            return await _run(app, rule_name, bus, None, since_ms, until_ms, topic, run_id, True)
        finally:
            await bus.close()
    bus, tables, objects = stores(data_dir, where, app=app)
    opened: list[Any] = []
    notifier = None
    functions = None
    try:
        for store in (bus, tables, objects):
            await store.open()
            opened.append(store)
        for table in app.tables.values():
            await tables.create_table(table.name, table.key)
        for bucket in app.buckets:
            await objects.create_bucket(bucket)
        notifier = Notifier(app.notifications, app.egress)
        functions = FunctionHost(app.root, app.functions)

        async def publish(events: Sequence[Event]) -> list[Appended]:
            try:
                return await bus.append(events)
            except Unavailable as exc:
                raise ActionError(str(exc)) from None

        services = Services(
            tables=tables,
            objects=objects,
            notifier=notifier,
            functions=functions,
            publish=publish,
            log=logging.getLogger("rulebus.rules"),
        )
        return await _run(app, rule_name, bus, services, since_ms, until_ms, topic, run_id, False)
    finally:
        await close_actions(app)
        if notifier is not None:
            await notifier.close()
        if functions is not None:
            functions.close()
        for store in reversed(opened):
            await store.close()


async def _run(
    app: App,
    rule_name: str,
    bus: Bus,
    services: Services | None,
    since_ms: int | None,
    until_ms: int | None,
    topic: TopicFilter | None,
    run_id: str,
    dry_run: bool,
) -> Counts:
    replay = Replay(
        app,
        app.rules[rule_name],
        bus,
        since_ms=since_ms,
        until_ms=until_ms,
        topic=topic,
        id=run_id,
        services=services,
    )
    progress = Progress(f"replay {run_id}", await bus.history_count(since_ms, until_ms))

    def line(item: dict[str, Any]) -> None:
        progress.interrupt()  # stdout may be the same terminal as the bar
        sys.stdout.write(codec.dumps_str(item) + "\n")

    counts = await replay.run(line, progress.advance)
    sys.stdout.flush()
    progress.finish(counts.summary(dry_run) + ("" if not dry_run else " (dry run)"))
    return counts
