"""User functions: ``handler(event, ctx)``, sync or async, with a timeout and a concurrency cap."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rulebus import codec
from rulebus.errors import ActionError, BadInput, RulebusError
from rulebus.sql import validate_topic

if TYPE_CHECKING:
    from rulebus.actions.base import Delivery, Published
    from rulebus.template.model import FunctionSpec

CHUNK = 64  # sync calls per thread hop

Handler = Callable[[Any, "FunctionContext"], Any]


def load_handler(root: Path, spec: str) -> Handler:
    """Import ``module:callable`` from the app folder ``root``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RulebusError(f"expected module:callable, got {spec!r}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise RulebusError(f"cannot import module {module_name!r}: {exc}") from None
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise RulebusError(f"module {module_name!r} has no callable {attr!r}")
    return handler  # type: ignore[no-any-return]


def forget_handlers(root: Path, specs: Iterable[FunctionSpec]) -> None:
    """Drop the handlers' modules, so the next import reads their files again.

    For a reload: an edited handler takes effect. Only the modules that
    handlers name, and only those in the app folder; modules they import
    stay as they are until a restart.
    """
    root = root.resolve()
    for spec in specs:
        name = spec.handler.partition(":")[0]
        file = getattr(sys.modules.get(name), "__file__", None)
        if file and Path(file).resolve().is_relative_to(root):
            del sys.modules[name]


class FunctionContext:
    """What a handler gets besides the event: who called it, ``publish`` and ``log``.

    ``publish`` only records the event; the runtime appends everything a call
    published once the call has returned, with ids that are the same on a
    retry, so a retried call does not publish twice.
    """

    def __init__(self, delivery: Delivery, function: str, log: logging.Logger) -> None:
        self.event_id = delivery.event.id
        self.topic = delivery.event.topic
        self.timestamp = delivery.event.ts
        self.rule = delivery.rule
        self.function = function
        self.log = log
        self.published: list[Published] = []

    def publish(self, topic: str, payload: Any) -> None:
        """Publish ``payload`` (JSON-serialisable) to ``topic`` once the call returns.

        Raises ValueError at once for an invalid topic or a payload that is not JSON.
        """
        try:
            validate_topic(topic)
        except BadInput as exc:
            raise ValueError(exc.message) from None
        try:
            raw = codec.dumps(payload)
        except codec.EncodeError as exc:
            raise ValueError(f"payload for {topic!r} is not JSON: {exc}") from None
        self.published.append((topic, payload, raw))


class FunctionHost:
    """Runs handlers: async ones on the event loop, sync ones on a thread pool."""

    def __init__(self, root: Path, specs: dict[str, FunctionSpec]) -> None:
        self._specs = specs
        self._handlers = {name: load_handler(root, spec.handler) for name, spec in specs.items()}
        self._is_async = {
            name: inspect.iscoroutinefunction(handler) for name, handler in self._handlers.items()
        }
        self._limits = {name: asyncio.Semaphore(spec.concurrency) for name, spec in specs.items()}
        # Enough threads for every function's concurrency at once, so one slow
        # function never queues another's calls behind it.
        workers = sum(spec.concurrency for spec in specs.values()) or 1
        self._pool = ThreadPoolExecutor(max_workers=min(workers, 256), thread_name_prefix="fn")
        self._log = logging.getLogger("rulebus.functions")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def invoke_many(
        self, name: str, deliveries: Sequence[Delivery]
    ) -> list[list[Published] | Exception]:
        """Call the handler for each delivery; returns what each published, or its error."""
        if self._is_async[name]:
            return list(await asyncio.gather(*(self._call_async(name, d) for d in deliveries)))
        # Sync handlers run on the thread pool in chunks: one thread hop per
        # chunk instead of per call, and at most ``concurrency`` chunks at once.
        chunks = [deliveries[i : i + CHUNK] for i in range(0, len(deliveries), CHUNK)]
        results = await asyncio.gather(*(self._call_sync(name, chunk) for chunk in chunks))
        return [result for chunk in results for result in chunk]

    async def _call_async(self, name: str, delivery: Delivery) -> list[Published] | Exception:
        spec = self._specs[name]
        ctx = FunctionContext(delivery, name, self._log.getChild(name))
        async with self._limits[name]:
            try:
                await asyncio.wait_for(self._handlers[name](delivery.output, ctx), spec.timeout)
            except TimeoutError:
                return ActionError(f"function {name!r} timed out after {spec.timeout}s")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the engine itself is being cancelled
                return ActionError(f"function {name!r} raised CancelledError")
            except BaseException as exc:  # SystemExit from user code must not stop rulebus
                return _raised(name, exc)
        return ctx.published

    async def _call_sync(
        self, name: str, chunk: Sequence[Delivery]
    ) -> list[list[Published] | Exception]:
        spec = self._specs[name]
        async with self._limits[name]:
            loop = asyncio.get_running_loop()
            call = loop.run_in_executor(self._pool, self._run_chunk, name, chunk)
            try:
                # A thread cannot be killed: a chunk that overruns is abandoned
                # (its calls are retried) and what it publishes later is dropped.
                return await asyncio.wait_for(call, spec.timeout * len(chunk))
            except TimeoutError:
                error = ActionError(f"function {name!r} timed out after {spec.timeout}s")
                return [error] * len(chunk)

    def _run_chunk(self, name: str, chunk: Sequence[Delivery]) -> list[list[Published] | Exception]:
        handler = self._handlers[name]
        timeout = self._specs[name].timeout
        log = self._log.getChild(name)
        out: list[list[Published] | Exception] = []
        for delivery in chunk:
            ctx = FunctionContext(delivery, name, log)
            started = time.monotonic()
            try:
                handler(delivery.output, ctx)
            except BaseException as exc:  # SystemExit from user code must not stop rulebus
                out.append(_raised(name, exc))
                continue
            if time.monotonic() - started > timeout:
                out.append(ActionError(f"function {name!r} timed out after {timeout}s"))
            else:
                out.append(ctx.published)
        return out


def _raised(name: str, exc: BaseException) -> Exception:
    if isinstance(exc, ActionError):
        return exc
    return ActionError(f"function {name!r} raised {type(exc).__name__}: {exc}")
