"""``rulebus reload``: the running processes of a data directory load their app file again."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from rulebus.cli.common import data_dir_option
from rulebus.errors import RulebusError
from rulebus.reload import records, request_reload, running
from rulebus.template import load_app


@click.command()
@data_dir_option
@click.option(
    "--wait",
    type=click.FloatRange(0, 300),
    default=10.0,
    show_default=True,
    help="Seconds to wait for every process to say how its reload went.",
)
def reload(data_dir: Path, wait: float) -> None:
    """Make the running rulebus processes of this host load their app file again.

    Each app file is checked first: if one fails, nothing is reloaded. The
    running processes (``up``, ``api``, ``worker``, found through
    DATA_DIR/run) then reload, and each says what changed. SIGHUP to one of
    them does the same for that process.
    """
    processes = running(data_dir)
    if not processes:
        raise RulebusError(f"no running rulebus process uses {data_dir} (use --data-dir)")
    for file in sorted({p.app for p in processes}):
        try:
            load_app(file)
        except RulebusError as exc:
            raise RulebusError(f"{exc}; nothing was reloaded") from None
    since = time.time()
    pending = set(request_reload(data_dir))
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        for entry in records(data_dir, since):
            pid = int(entry.get("pid", 0))
            if pid in seen:
                continue
            seen[pid] = entry
            click.echo(_line(entry))
            pending.discard(pid)
            # The engine processes of ``up`` reload after it: wait for them too,
            # unless one already answered (its record may come before up's).
            pending.update(int(c) for c in entry.get("forwarded", []) if int(c) not in seen)
    for pid in sorted(pending):
        click.echo(f"pid {pid}: no answer within {wait:g}s (see its log)")
    failed = bool(pending) or any(not e.get("ok") for e in seen.values())
    sys.exit(1 if failed else 0)


def _line(entry: dict[str, Any]) -> str:
    who = f"pid {entry.get('pid')} ({entry.get('role')})"
    if not entry.get("ok"):
        return f"{who}: reload failed, running as before: {entry.get('error')}"
    changes = entry.get("changes") or {}
    parts = [
        f"{what} {', '.join(changes[what])}"
        for what in ("added", "changed", "removed", "enabled", "disabled")
        if changes.get(what)
    ]
    if changes.get("other"):
        parts.append(f"also changed: {', '.join(changes['other'])}")
    return f"{who}: reloaded: {'; '.join(parts) or 'no change'}"
