"""``rulebus trace EVENT_ID``: what happened to one event, as a tree or as JSON."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rulebus import codec
from rulebus.backends.registry import open_store
from rulebus.cli.common import backends, backends_option, data_dir_option, require_data_dir
from rulebus.template import load_app
from rulebus.template.model import App
from rulebus.trace import trace as build_trace

F = TypeVar("F", bound=Callable[..., Any])


def app_option(what: str) -> Callable[[F], F]:
    """``--app``: the app folder, from ``$RULEBUS_APP`` or else the current folder's."""
    return click.option(
        "--app",
        "app_dir",
        type=click.Path(path_type=Path),
        default=lambda: os.environ.get("RULEBUS_APP"),
        show_default="$RULEBUS_APP, or the current folder's rulebus.yaml",
        help=what,
    )


def current_app(app_dir: Path | None) -> App | None:
    """The app named by --app, or the one in the current directory, if any."""
    if app_dir is not None:
        return load_app(app_dir)
    here = Path.cwd()
    if (here / "rulebus.yaml").is_file():
        return load_app(here)
    return None


@click.command("trace")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON (as HTTP gives it).")
@app_option("The app as it runs now: adds the rules the event did not match, and action names.")
@data_dir_option
@backends_option
def trace_command(
    event_id: str, as_json: bool, app_dir: Path | None, data_dir: Path, **chosen: Any
) -> None:
    """Show what happened to event EVENT_ID: rules, attempts, dead letters, events it caused."""
    where = backends(chosen)
    require_data_dir(data_dir, where)
    app = current_app(app_dir)

    async def main() -> dict[str, Any]:
        bus = open_store("bus", where.bus, data_dir)
        await bus.open()
        try:
            return await build_trace(bus, event_id, app)
        finally:
            await bus.close()

    found = asyncio.run(main())
    if as_json:
        click.echo(codec.dumps_str(found))
    else:
        lines = render(found)
        if app is None:
            lines.append("(give --app to see the rules it did not match)")
        click.echo("\n".join(lines))


def render(trace: dict[str, Any], indent: str = "") -> list[str]:
    """The trace as an indented tree, one line per fact."""
    event = trace["event"]
    lines = [
        f"{indent}event {event['id']}  {event['topic']}  {event['time']}"
        f"  from {event['client_id'] or '?'}"
    ]
    inner = indent + "  "
    lines.append(f"{inner}payload {codec.dumps_str(event['payload'])}")
    if not trace["dispatched"]:
        lines.append(f"{inner}(not dispatched yet)")
    if trace["app_changed"]:
        lines.append(f"{inner}(the rules changed since dispatch: reasons are for the rules now)")
    for rule in trace["rules"]:
        if not rule["matched"]:
            why = f"not matched ({rule['reason']}): {rule['detail']}"
            lines.append(f"{inner}- {rule['rule']}: {why}")
            continue
        changed = " (rule changed since)" if rule.get("changed_since") else ""
        lines.append(f"{inner}+ {rule['rule']}: {rule['status']}{changed}")
        for attempt in rule["attempts"]:
            if attempt["kind"] == "purge":
                lines.append(
                    f"{inner}    dead letter purged at {attempt['at']}"
                    f" (after {attempt['attempt']} attempts)"
                )
                continue
            label = attempt["kind"]
            if label == "replay":
                label = f"replay {attempt['replay']}"
            lines.append(f"{inner}    {label} attempt {attempt['attempt']} at {attempt['at']}")
            for action in attempt["actions"]:
                name = (
                    f"{action['action']} {action['resource']}"
                    if action["action"]
                    else f"action {action['index']}"
                )
                outcome = f"failed: {action['error']}" if action["error"] else "ok"
                lines.append(f"{inner}      {name}: {outcome} ({action['duration_ms']:.1f} ms)")
    for letter in trace["dead_letters"]:
        reasons = "; ".join(f.get("errorMessage", "") for f in letter["failures"])
        lines.append(
            f"{inner}! dead letter {letter['id']} ({letter['rule']}, {letter['attempts']}"
            f" attempts, {letter['failed_at']}): {reasons}"
        )
    for retry in trace["retrying"]:
        reasons = "; ".join(f["message"] for f in retry["failures"])
        lines.append(
            f"{inner}~ retrying {retry['rule']} at {retry['due_at']}"
            f" after {retry['attempts']} attempts: {reasons}"
        )
    for child in trace["children"]:
        via = f"{child['rule']} action {child['action']}"
        if child["replay"]:
            via += f", replay {child['replay']}"
        lines.append(f"{inner}> published by {via}:")
        lines.extend(render(child["trace"], inner + "  "))
    return lines
