"""Engine processes under a supervisor: started, restarted when they die, stopped gracefully.

``rulebus up`` and ``rulebus worker --processes N`` run the engine in child
processes so that it uses more than one core. On the embedded bus the
supervisor holds the data directory's engine lock for all of them, and each
child dispatches one fixed partition of the log; on a distributed bus the
children share the work among themselves like any other workers.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
from pathlib import Path

from rulebus import metrics
from rulebus.runtime import EngineLock

log = logging.getLogger("rulebus.supervisor")

RESTART_DELAY = 1.0  # seconds between a child's death and its restart

_children: set[asyncio.subprocess.Process] = set()  # the engine processes running now


def signal_children(sig: signal.Signals) -> list[int]:
    """Pass a signal on to every engine process (a reload: SIGHUP); returns their pids."""
    pids = []
    for proc in _children:
        if proc.returncode is None:
            proc.send_signal(sig)
            pids.append(proc.pid)
    return pids


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def settle_memory() -> None:
    """After loading: keep what loading made out of the garbage collector's scans.

    The compiled rules, modules and their objects live as long as the
    process; without this, every full collection walks them all again, and
    that walk is a pause in the middle of some event's delivery.
    """
    gc.collect()
    gc.freeze()
    # Events make many short-lived dicts and lists that reference counting
    # frees; with the default threshold (700 allocations) the young
    # generation was collected several times per batch, about 5% of a
    # worker's CPU, to find cycles that are rare here.
    gc.set_threshold(20_000, 10, 10)


async def supervise_all(
    commands: list[list[str]],
    stop: asyncio.Event,
    ready: asyncio.Event,
    lock_dir: Path | None = None,
) -> None:
    """Keep one process per command running until ``stop``.

    With ``lock_dir``, first hold that data directory's engine lock (the
    children run partitions of its embedded log). ``ready`` is set once each
    child runs its engine or has exited trying.
    """
    lock = EngineLock(lock_dir) if lock_dir is not None else None
    if lock is not None:
        locking = asyncio.ensure_future(lock.acquire())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({locking, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not locking.done():
            locking.cancel()
            lock.release()
            ready.set()
            return
        stopping.cancel()
    readies = [asyncio.Event() for _ in commands]

    async def all_ready() -> None:
        for each in readies:
            await each.wait()
        ready.set()

    try:
        await asyncio.gather(
            all_ready(),
            *(_supervise(c, stop, r) for c, r in zip(commands, readies, strict=True)),
        )
    finally:
        ready.set()
        if lock is not None:
            lock.release()


async def _supervise(command: list[str], stop: asyncio.Event, ready: asyncio.Event) -> None:
    """Keep one child running until ``stop``, then stop it gracefully."""
    while True:
        read_end, write_end = os.pipe()
        proc = await asyncio.create_subprocess_exec(
            *command,
            "--ready-fd",
            str(write_end),
            env=_child_environment(),
            pass_fds=(write_end,),
            preexec_fn=_die_with_parent,
        )
        os.close(write_end)
        _children.add(proc)
        signalled = asyncio.ensure_future(_await_ready(read_end, ready))
        waiting = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            _children.discard(proc)
        if stop.is_set():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await waiting
            await signalled
            return
        stopping.cancel()
        await signalled
        metrics.process_died(proc.pid)
        log.error("engine process exited with %s; restarting it", proc.returncode)
        await asyncio.sleep(RESTART_DELAY)


def _die_with_parent() -> None:
    """In the child, before exec: a kill -9 of the supervisor takes the child with it."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _child_environment() -> dict[str, str]:
    """The child's environment: ours, with fewer malloc arenas unless set already.

    glibc gives each thread that allocates its own arena; the engine's
    threads (writers, functions, object writers) would each keep one, and
    memory freed in one cannot serve another. Two keep the peak RSS down.
    """
    env = dict(os.environ)
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


async def _await_ready(read_end: int, ready: asyncio.Event) -> None:
    """Set ``ready`` on the child's line, or at end of file if it exits first."""
    try:
        await asyncio.to_thread(os.read, read_end, 64)
    finally:
        os.close(read_end)
        ready.set()


def signal_ready(ready_fd: int | None) -> None:
    """In the child: tell the supervisor that the engine runs."""
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
