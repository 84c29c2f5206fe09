"""The bus's numbers, sampled every few seconds in the API process, for the Overview's rates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import asdict
from typing import Any

from rulebus.backends.base import Bus

log = logging.getLogger("rulebus.console")

EVERY = 5.0  # seconds between samples
KEEP = int(15 * 60 / EVERY)  # 15 minutes of them


class Sampler:
    """Samples ``bus.stats()`` while the console is in use; started by its first page."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.samples: deque[tuple[float, dict[str, Any]]] = deque(maxlen=KEEP)
        self._task: asyncio.Task[None] | None = None

    async def now(self) -> dict[str, Any]:
        """The numbers now (and a sample of them), starting the sampling if it is not running."""
        stats = asdict(await self._bus.stats())
        self.samples.append((time.time(), stats))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="console-sampler")
        return stats

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(EVERY)
            try:
                self.samples.append((time.time(), asdict(await self._bus.stats())))
            except Exception as exc:  # a bus outage: the Overview shows the gap
                log.warning("console: cannot read the bus's numbers: %s", exc)

    def rates(self, minutes: int = 15) -> dict[str, float | None]:
        """Events per second appended (ingest) and dispatched over the last ``minutes``."""
        since = time.time() - minutes * 60
        window = [(at, s) for at, s in self.samples if at >= since]
        if len(window) < 2 or window[-1][0] - window[0][0] <= 0:
            return {"ingest": None, "dispatch": None, "seconds": 0.0}
        (first_at, first), (last_at, last) = window[0], window[-1]
        seconds = last_at - first_at
        return {
            "ingest": (last["head"] - first["head"]) / seconds,
            "dispatch": (last["dispatched"] - first["dispatched"]) / seconds,
            "seconds": seconds,
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
