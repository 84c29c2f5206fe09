"""One app running on one set of backends: the stores, the engine and their lifecycle."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from rulebus.actions.base import Services
from rulebus.backends.base import WHOLE_LOG, Partition
from rulebus.backends.fs_objects import FileObjectStore
from rulebus.backends.sqlite_bus import SqliteBus
from rulebus.backends.sqlite_tables import SqliteTableStore
from rulebus.backends.sqlite_writer import WRITER_CACHE_KIB
from rulebus.engine.runner import Engine
from rulebus.functions import FunctionHost
from rulebus.notifications import Notifier
from rulebus.template.model import App

log = logging.getLogger("rulebus.runtime")


WORKER_BUS_CACHE_KIB = 2_000


def stores(
    data_dir: Path, *, dispatching: bool = False, partition: Partition | None = None
) -> tuple[SqliteBus, SqliteTableStore, FileObjectStore]:
    """The embedded backends, laid out under ``data_dir``.

    A worker of ``rulebus up`` (one of ``partition.count``) writes to the log
    only what its functions publish, and shares the table writes with the
    other workers, so its writers get smaller page caches: each process's
    cache is memory of its own, and the benchmark's 300 MB counts them all.
    """
    bus_cache = tables_cache = WRITER_CACHE_KIB
    if partition is not None:
        bus_cache = WORKER_BUS_CACHE_KIB
        tables_cache = WRITER_CACHE_KIB // partition.count
    return (
        SqliteBus(
            data_dir / "bus.sqlite3",
            dispatching=dispatching,
            partition=partition or WHOLE_LOG,
            cache_kib=bus_cache,
        ),
        SqliteTableStore(data_dir / "tables.sqlite3", cache_kib=tables_cache),
        FileObjectStore(data_dir / "buckets"),
    )


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

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Runtime:
    """Opens the backends an app needs and, with ``engine``, runs its rules.

    Without ``engine`` it only publishes (an API process whose engine runs in
    another process on the same data directory).
    """

    def __init__(
        self, app: App, data_dir: Path, *, engine: bool = True, partition: Partition | None = None
    ) -> None:
        self.app = app
        self.data_dir = data_dir
        self.runs_engine = engine
        self.bus, self.tables, self.objects = stores(
            data_dir, dispatching=engine, partition=partition
        )
        # An engine for one partition runs under a supervisor (``rulebus
        # up``) that holds the data directory's engine lock for all of them.
        self._lock = EngineLock(data_dir) if partition is None else None
        self.engine: Engine | None = None
        self.notifier: Notifier | None = None
        self.functions: FunctionHost | None = None

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
        if not self.runs_engine:
            await self.objects.close()
            await self.tables.close()
            return
        if self._lock is not None:
            await self._lock.acquire()
        self.notifier = Notifier(self.app.notifications)
        self.functions = FunctionHost(self.app.root, self.app.functions)
        services = Services(
            tables=self.tables,
            objects=self.objects,
            notifier=self.notifier,
            functions=self.functions,
            publish=self.bus.append,
            log=logging.getLogger("rulebus.rules"),
        )
        self.engine = Engine(self.app, self.bus, services)
        await self.engine.start()

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()
        if self.notifier is not None:
            await self.notifier.close()
        if self.functions is not None:
            self.functions.close()
        if self.runs_engine:
            await self.objects.close()
            await self.tables.close()
        await self.bus.close()
        if self._lock is not None:
            self._lock.release()

    async def stats(self) -> dict[str, Any]:
        return {
            "head": await self.bus.head(),
            "dispatched": await self.bus.load_dispatched(),
            "retrying": await self.bus.count_retries(),
            "dead_letters": await self.bus.count_dead_letters(),
        }
