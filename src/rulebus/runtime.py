"""One app running on one set of backends: the stores, the engine and their lifecycle."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rulebus.actions.base import Services
from rulebus.backends.fs_objects import FileObjectStore
from rulebus.backends.sqlite_bus import SqliteBus
from rulebus.backends.sqlite_tables import SqliteTableStore
from rulebus.engine.runner import Engine
from rulebus.functions import FunctionHost
from rulebus.notifications import Notifier
from rulebus.template.model import App


def stores(data_dir: Path) -> tuple[SqliteBus, SqliteTableStore, FileObjectStore]:
    """The embedded backends, laid out under ``data_dir``."""
    return (
        SqliteBus(data_dir / "bus.sqlite3"),
        SqliteTableStore(data_dir / "tables.sqlite3"),
        FileObjectStore(data_dir / "buckets"),
    )


class Runtime:
    """Opens the backends an app needs, creates its tables and buckets, runs its engine."""

    def __init__(self, app: App, data_dir: Path) -> None:
        self.app = app
        self.data_dir = data_dir
        self.bus, self.tables, self.objects = stores(data_dir)
        self.notifier = Notifier(app.notifications)
        self.functions = FunctionHost(app.root, app.functions)
        self.services = Services(
            tables=self.tables,
            objects=self.objects,
            notifier=self.notifier,
            functions=self.functions,
            publish=self.bus.append,
            log=logging.getLogger("rulebus.rules"),
        )
        self.engine = Engine(app, self.bus, self.services)

    async def start(self) -> None:
        for store in (self.bus, self.tables, self.objects):
            await store.open()
        for table in self.app.tables.values():
            await self.tables.create_table(table.name, table.key)
        for bucket in self.app.buckets:
            await self.objects.create_bucket(bucket)
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()
        await self.notifier.close()
        self.functions.close()
        for store in (self.objects, self.tables, self.bus):
            await store.close()

    async def stats(self) -> dict[str, Any]:
        return {
            "head": await self.bus.head(),
            "dispatched": self.engine.dispatched,
            "retrying": await self.bus.count_retries(),
            "dead_letters": await self.bus.count_dead_letters(),
        }
