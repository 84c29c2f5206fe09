"""Handing results from a writer thread back to the event loops waiting for them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

# (the waiting future's loop, the future, whether it failed, its result or exception)
Outcome = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", bool, Any]


def settle_from_thread(outcomes: Iterable[Outcome]) -> None:
    """Settle futures from another thread, waking each loop once for all of its own.

    Waking a loop is a system call; a loop woken once per future, under a
    stream of small writes, spends its time on wake-ups.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for loop, future, failed, value in outcomes:
        by_loop.setdefault(loop, []).append((future, failed, value))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, failed, value in settled:
        if future.done():
            continue
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)
