"""One app running on one set of backends: the stores, the engine and their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rulebus.actions.base import Services
from rulebus.backends.base import Appended, Bus, ObjectStore, TableStore
from rulebus.backends.registry import DEFAULTS, is_embedded, open_store
from rulebus.backends.sqlite_bus import Partition
from rulebus.backends.sqlite_writer import WRITER_CACHE_KIB
from rulebus.bridges.mqtt import MqttBridge
from rulebus.engine.keys import keyer
from rulebus.engine.runner import Engine, enabled
from rulebus.errors import ActionError, Unavailable
from rulebus.events import Event
from rulebus.functions import FunctionHost
from rulebus.notifications import Notifier
from rulebus.template.model import App

log = logging.getLogger("rulebus.runtime")


@dataclass(frozen=True)
class Backends:
    """Where the bus, the tables and the buckets live: one URL each (see the registry)."""

    bus: str = DEFAULTS["bus"]
    tables: str = DEFAULTS["tables"]
    objects: str = DEFAULTS["objects"]


def stores(
    data_dir: Path,
    backends: Backends = Backends(),
    *,
    app: App | None = None,
    engine: bool = False,
    partition: Partition | None = None,
) -> tuple[Bus, TableStore, ObjectStore]:
    """The stores for ``backends``, not opened yet; the embedded ones under ``data_dir``.

    With ``app``, events appended get their partition keys. A worker of
    ``rulebus up`` (one of ``partition.count``) shares the table writes with
    the other workers, so its SQLite writer gets a share of the page cache.
    """
    options: dict[str, Any] = {"engine": engine, "keyer": keyer(app) if app else None}
    if partition is not None:
        options["partition"] = partition
    cache = WRITER_CACHE_KIB // (partition.count if partition is not None else 1)
    return (
        open_store("bus", backends.bus, data_dir, **options),
        open_store("tables", backends.tables, data_dir, cache_kib=cache),
        open_store("objects", backends.objects, data_dir),
    )


async def close_actions(app: App) -> None:
    """Close every action of an app's rules; one that fails to close is logged, not raised."""
    for rule in app.rules.values():
        for action in [*rule.actions, rule.error_action]:
            if action is None:
                continue
            try:
                await action.close()
            except Exception as exc:
                log.warning("closing action %s of rule %s failed: %s", action.kind, rule.name, exc)


class EngineLock:
    """One engine per data directory: two would deliver every event twice."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "engine.lock"
        self._fd: int | None = None

    async def acquire(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        warned = False
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if not warned:
                    log.warning("another engine runs on %s; waiting for it to stop", self.path)
                    warned = True
                await asyncio.sleep(0.2)

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now; a probe that keeps nothing."""
        if not self.path.parent.exists():
            return False
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock taken here
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Runtime:
    """Opens the backends an app needs and, with ``engine``, runs its rules.

    Without ``engine`` it only publishes (an API process whose engine runs in
    another process on the same data directory). With ``bridges`` (a process
    serving the API) it also runs the app's MQTT subscriptions.
    """

    def __init__(
        self,
        app: App,
        data_dir: Path,
        backends: Backends = Backends(),
        *,
        engine: bool = True,
        partition: Partition | None = None,
        bridges: bool = False,
    ) -> None:
        self.app = app
        self.data_dir = data_dir
        self.runs_engine = engine
        self.backends = backends  # the console opens its own readers of tables and buckets
        self.bus, self.tables, self.objects = stores(
            data_dir, backends, app=app, engine=engine, partition=partition
        )
        # One engine per embedded log: two would deliver every event twice.
        # An engine for one partition runs under a supervisor (``rulebus
        # up``) that holds the lock for all of them. Distributed buses share
        # the work among any number of engines themselves.
        embedded = is_embedded(backends.bus)
        self._lock = EngineLock(data_dir) if embedded and partition is None else None
        self.engine: Engine | None = None
        self.notifier: Notifier | None = None
        self.functions: FunctionHost | None = None
        self._retired: list[FunctionHost] = []  # replaced by reloads, closed at stop
        self._retired_apps: list[App] = []
        self._compactor: asyncio.Task[None] | None = None
        self.bridge = MqttBridge(app.mqtt, self.bus) if bridges and app.mqtt else None

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.bus.open()
        # Tables and buckets exist once ``up`` listens, even before a worker
        # process has started, so readers never race the worker.
        await self.tables.open()
        await self.objects.open()
        for table in self.app.tables.values():
            await self.tables.create_table(table.name, table.key)
        for bucket in self.app.buckets:
            await self.objects.create_bucket(bucket)
        if self.bridge is not None:
            self.bridge.start()
        if not self.runs_engine:
            await self.objects.close()
            await self.tables.close()
            return
        if self._lock is not None:
            await self._lock.acquire()
        self.notifier = Notifier(self.app.notifications, self.app.egress)
        self.functions = FunctionHost(self.app.root, self.app.functions)
        services = Services(
            tables=self.tables,
            objects=self.objects,
            notifier=self.notifier,
            functions=self.functions,
            publish=self._publish,
            log=logging.getLogger("rulebus.rules"),
        )
        self.engine = Engine(self.app, self.bus, services)
        await self.engine.start()
        if not self.app.retention.keeps_everything:
            self._compactor = asyncio.create_task(self._compact(), name="compactor")

    async def reload(self, app: App) -> None:
        """Put a reloaded app in place: new tables and buckets, topics, functions, rules."""
        if self.bridge is not None and app.mqtt != self.app.mqtt:
            log.warning(
                "the mqtt section changed: the MQTT subscriptions go on as they were until"
                " this process restarts"
            )
        if not self.runs_engine:
            # An API process publishes only; its routes are built at start.
            self.app = app
            return
        assert self.engine is not None and self.notifier is not None
        # First what may fail, so that a failure leaves the app as it was.
        # Handlers may have changed even where their specs did not.
        functions = FunctionHost(app.root, app.functions)
        for table in app.tables.values():
            await self.tables.create_table(table.name, table.key)
        for bucket in app.buckets:
            await self.objects.create_bucket(bucket)
        starts = await self.bus.rule_starts(enabled(app))
        # From here on, nothing waits: no batch sees half of the change.
        self.notifier.update(app.notifications, app.egress)
        if self.functions is not None:
            # Its threads may still be running calls: closed with the runtime.
            self._retired.append(self.functions)
        self._retired_apps.append(self.app)  # its actions too: closed at stop
        self.functions = self.engine.services.functions = functions
        self.app = app
        self.engine.use(app, starts)
        if self._compactor is None and not app.retention.keeps_everything:
            self._compactor = asyncio.create_task(self._compact(), name="compactor")

    async def _publish(self, events: Sequence[Event]) -> list[Appended]:
        """Append what actions publish; a bus that cannot take it now fails the action.

        A full disk or an unreachable server is then a retryable action
        failure, like any other, rather than an unexpected error logged for
        every delivery.
        """
        try:
            return await self.bus.append(events)
        except Unavailable as exc:
            raise ActionError(str(exc)) from None

    async def _compact(self) -> None:
        """Remove what the app's retention no longer keeps: at start, then every so often."""
        while True:
            retention = self.app.retention  # a reload may change it
            try:
                removed = await self.bus.compact(retention)
            except Exception as exc:
                log.warning("retention: compacting the event log failed: %s", exc)
            else:
                if removed:
                    log.info("retention: removed %d entries from the event log", removed)
            await asyncio.sleep(retention.compact_every)

    async def stop(self) -> None:
        if self.bridge is not None:
            await self.bridge.stop()
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        if self.engine is not None:
            await self.engine.stop()
        if self.notifier is not None:
            await self.notifier.close()
        if self.runs_engine:
            for app in [*self._retired_apps, self.app]:
                await close_actions(app)
        for host in [*self._retired, self.functions]:
            if host is not None:
                host.close()
        if self.runs_engine:
            await self.objects.close()
            await self.tables.close()
        await self.bus.close()
        if self._lock is not None:
            self._lock.release()

    async def stats(self) -> dict[str, Any]:
        stats = asdict(await self.bus.stats())
        if self.bridge is not None:
            stats["mqtt"] = self.bridge.stats()
        return stats
