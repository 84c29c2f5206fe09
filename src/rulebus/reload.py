"""Hot reload: load the app file again in running processes, without a restart.

``rulebus reload`` (or SIGHUP to ``up``, ``api`` or ``worker``) makes each
running process of a data directory load its app file again. A file that
fails ``check`` changes nothing: the process goes on with the app it has and
says why. Otherwise rules added, changed, enabled, disabled or removed apply
to the events dispatched from then on; a new rule, as at start, only to the
events appended after it was first seen.

Processes find each other through the data directory: each top-level process
(``up``, ``api``, ``worker``) leaves ``run/PID.json`` there, and every process
that reloads appends what happened to ``run/reloads.jsonl``, the record of
reloads that ``rulebus reload`` reads back. ``up`` and ``worker --processes``
pass the signal on to their engine processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rulebus.config.source import read_source
from rulebus.errors import BadInput, RulebusError
from rulebus.functions import forget_handlers
from rulebus.template.loader import APP_FILE, load_app
from rulebus.template.model import App

log = logging.getLogger("rulebus.reload")

RECORD = "reloads.jsonl"


@dataclass
class Changes:
    """What a reload changes in the running app."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # top-level sections that changed

    def __bool__(self) -> bool:
        return any(vars(self).values())

    def summary(self) -> str:
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", self.added),
                ("changed", self.changed),
                ("removed", self.removed),
                ("enabled", self.enabled),
                ("disabled", self.disabled),
                ("also changed:", self.other),
            )
            if names
        ]
        return "; ".join(parts) or "no change"


def compare(old: App, new: App, raw_old: dict[str, Any], raw_new: dict[str, Any]) -> Changes:
    """The rules (and other sections) that differ between two loads of an app.

    ``raw_old`` and ``raw_new`` are the files' contents as loaded (``sections``).
    """
    changes = Changes()
    bodies_old, bodies_new = _rule_bodies(raw_old), _rule_bodies(raw_new)
    for name, rule in new.rules.items():
        before = old.rules.get(name)
        if before is None:
            changes.added.append(name)
            continue
        # What the file says of the rule (actions are objects built from it),
        # and the retry policy it may inherit from the top level.
        if bodies_old.get(name) != bodies_new.get(name) or before.retry != rule.retry:
            changes.changed.append(name)
        if before.enabled != rule.enabled:
            (changes.enabled if rule.enabled else changes.disabled).append(name)
    changes.removed = [name for name in old.rules if name not in new.rules]
    changes.other = [
        key
        for key in sorted(set(raw_old) | set(raw_new))
        if key != "rules" and raw_old.get(key) != raw_new.get(key)
    ]
    return changes


def refusal(old: App, new: App) -> str | None:
    """Why ``new`` cannot replace ``old`` in a running process, if it cannot."""
    keys_before = {n: r.partition_key.text for n, r in old.rules.items() if r.partition_key}
    keys_after = {n: r.partition_key.text for n, r in new.rules.items() if r.partition_key}
    if keys_before != keys_after:
        # Appenders assign events to partitions by these keys: a change
        # must reach every process at once, which only a restart does.
        return "partition_key changed: restart every rulebus process to apply it"
    return None


def sections(app: App) -> dict[str, Any]:
    """The app file's contents as they are now: what ``compare`` tells changes by."""
    try:
        data = read_source(Path(app.file)).data
    except RulebusError:
        return {}
    return data if isinstance(data, dict) else {}


def _rule_bodies(sections: dict[str, Any]) -> dict[str, str]:
    rules = sections.get("rules")
    if not isinstance(rules, dict):
        return {}
    return {
        name: json.dumps(
            {k: v for k, v in body.items() if k != "enabled"} if isinstance(body, dict) else body,
            sort_keys=True,
            default=str,
        )
        for name, body in rules.items()
    }


# -- processes of a data directory --------------------------------------------


def run_dir(data_dir: Path) -> Path:
    return data_dir / "run"


@contextlib.contextmanager
def registered(data_dir: Path, role: str, app_file: str) -> Iterator[None]:
    """Leave this process's pid, role and app file where ``rulebus reload`` finds them."""
    folder = run_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}.json"
    path.write_text(json.dumps({"pid": os.getpid(), "role": role, "app": app_file}))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


@dataclass(frozen=True)
class Process:
    pid: int
    role: str
    app: str


def running(data_dir: Path) -> list[Process]:
    """The live top-level processes of this data directory (stale entries are removed)."""
    found = []
    for path in sorted(run_dir(data_dir).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            process = Process(int(entry["pid"]), str(entry["role"]), str(entry["app"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        try:
            os.kill(process.pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        except PermissionError:
            pass  # alive, but another user's: signalling it will say so
        found.append(process)
    return found


def request_reload(data_dir: Path) -> list[int]:
    """Ask every running process of ``data_dir`` to reload; returns their pids.

    Each process checks its app file itself; the record of what each did
    follows in ``run/reloads.jsonl`` (``records``).
    """
    pids = []
    for process in running(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGHUP)
            pids.append(process.pid)
    return pids


def record(data_dir: Path, entry: dict[str, Any]) -> None:
    """Append one process's reload to the record (one short line: appends do not interleave)."""
    folder = run_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry, sort_keys=True) + "\n"
    fd = os.open(folder / RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def records(data_dir: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """The recorded reloads from ``since`` (seconds since the epoch) on, oldest first."""
    try:
        lines = (run_dir(data_dir) / RECORD).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("at", 0) >= since:
                out.append(entry)
    return out


# -- in a running process -----------------------------------------------------


class Reloader:
    """Reloads this process's app on SIGHUP, one reload at a time.

    ``apply`` puts a new app in place (it may raise a RulebusError to refuse
    it); ``forward`` passes the signal on to child processes.
    """

    def __init__(
        self,
        data_dir: Path,
        role: str,
        app: App,
        apply: Callable[[App], Awaitable[None]],
        forward: Callable[[], list[int]] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.role = role
        self.app = app
        self._raw = sections(app)
        self._apply = apply
        self._forward = forward
        self._running: asyncio.Task[None] | None = None
        self._again = False

    def install(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.trigger)

    def trigger(self) -> None:
        if self._running is not None and not self._running.done():
            self._again = True  # one more once this one is done: the file may have changed since
            return
        self._running = asyncio.ensure_future(self._reload())

    async def _reload(self) -> None:
        while True:
            self._again = False
            await self.reload()
            if not self._again:
                return

    async def reload(self) -> bool:
        """Load the app file again and apply it; False (and nothing changed) if it fails."""
        entry: dict[str, Any] = {
            "at": time.time(),
            "pid": os.getpid(),
            "role": self.role,
            "file": self.app.file,
        }
        try:
            forget_handlers(self.app.root, self.app.functions.values())
            new = load_app(Path(self.app.file))
            raw = sections(new)
            refused = refusal(self.app, new)
            if refused is not None:
                raise BadInput(refused)
            changes = compare(self.app, new, self._raw, raw)
            await self._apply(new)
        except RulebusError as exc:
            log.error("reload failed, still running the app as it was: %s", exc)
            record(self.data_dir, {**entry, "ok": False, "error": str(exc)})
            return False
        self.app, self._raw = new, raw
        log.info("reloaded %s: %s", self.app.file, changes.summary())
        # The engine processes it runs reload after it, and record their own.
        forwarded = self._forward() if self._forward is not None else []
        record(
            self.data_dir,
            {**entry, "ok": True, "changes": vars(changes), "forwarded": forwarded},
        )
        return True


# -- editing the app file -----------------------------------------------------

_ENABLED_LINE = re.compile(r"^(\s*enabled:\s*)(\S+)(\s*(#.*)?)$")


def set_rule_enabled(app_file: Path, rule: str, enabled: bool) -> None:
    """Set ``rules.RULE.enabled`` in the app file, keeping the rest of it as written.

    The file must still pass ``check`` afterwards, or it is left as it was.
    """
    if app_file.is_dir():
        app_file = app_file / APP_FILE
    source = read_source(app_file)
    rules = source.data.get("rules") if isinstance(source.data, dict) else None
    if not isinstance(rules, dict) or not isinstance(rules.get(rule), dict):
        raise BadInput(f"{app_file}: no rule {rule!r}", status=404)
    text = app_file.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    value = "true" if enabled else "false"
    if "enabled" in rules[rule]:
        index = source.lines.get(("rules", rule, "enabled"), 0) - 1
        line = lines[index].rstrip("\r\n") if index >= 0 else ""
        match = _ENABLED_LINE.match(line)
        if match is None:
            raise BadInput(f"{app_file}: rules.{rule}.enabled is not on a line of its own")
        ending = lines[index][len(line) :]
        lines[index] = f"{match.group(1)}{value}{match.group(3)}{ending}"
    else:
        first_key = next(iter(rules[rule]), None)
        number = source.lines.get(("rules", rule, first_key)) if first_key else None
        head = source.lines.get(("rules", rule))
        if number is None or number == head:
            raise BadInput(f"{app_file}: rules.{rule} is not a block mapping; set enabled by hand")
        indent = re.match(r"\s*", lines[number - 1]).group(0)  # type: ignore[union-attr]
        lines.insert(number - 1, f"{indent}enabled: {value}\n")
    updated = "".join(lines)
    app_file.write_text(updated, encoding="utf-8")
    try:
        load_app(app_file)
    except RulebusError:
        app_file.write_text(text, encoding="utf-8")
        raise
