"""The action interface and what an action gets to work with."""

from __future__ import annotations

import asyncio
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from rulebus import codec
from rulebus.backends.base import Appended, ObjectStore, TableStore
from rulebus.egress import Egress
from rulebus.errors import ActionError, SqlError
from rulebus.events import MAX_HOPS, Event, name_id
from rulebus.sql import EvalContext, Template, compile_template

if TYPE_CHECKING:
    from rulebus.actions.mqtt import BrokerSpec
    from rulebus.config.options import Options

T = TypeVar("T")

_DERIVED = uuid.UUID("5b1d2f0e-6c1e-4f0a-9a57-7275c6562b75")


@dataclass(frozen=True)
class Declared:
    """The names an app declares, so actions can check their references at load time."""

    tables: dict[str, tuple[str, ...]]
    buckets: frozenset[str]
    notifications: frozenset[str]
    functions: frozenset[str]
    # Where actions that send over HTTP may connect (the app's ``egress``).
    egress: Egress = field(default_factory=Egress)
    # Valid but probably not what was meant: the app's warnings, which actions add to.
    warnings: list[str] = field(default_factory=list)
    # The MQTT brokers of the app's ``mqtt`` section, by name.
    brokers: dict[str, BrokerSpec] = field(default_factory=dict)

    def warn(self, opts: Options, key: str, message: str) -> None:
        """Warn about ``key`` of ``opts`` as ``file:line: message``, as rulebus check shows."""
        self.warnings.append(warning(opts, key, message))


def warning(opts: Options, key: str, message: str) -> str:
    """A load-time warning about ``key`` of ``opts``: ``file:line: message``."""
    return f"{opts.source.file}:{opts.source.line((*opts.path, key))}: {message}"


@dataclass(slots=True)
class Delivery:
    """One rule's output for one event, on its way through the rule's actions.

    ``input`` is what ``${}`` templates see: the event's payload, as in AWS IoT
    (for an error action, the error payload).
    """

    event: Event
    rule: str
    output: Any
    ctx: EvalContext
    input: Any

    def derived_id(self, action_index: int, n: int = 0) -> str:
        """A stable id for the n-th event this action publishes, the same on every retry.

        The bus drops a second append with the same id, so a replayed delivery
        does not publish its events twice.
        """
        return name_id(_DERIVED, f"{self.event.id}/{self.rule}/{action_index}/{n}")

    def derive(self, action_index: int, n: int, topic: str, payload: Any, raw: bytes) -> Event:
        """The n-th event an action publishes for this delivery."""
        return Event(
            id=self.derived_id(action_index, n),
            topic=topic,
            ts=self.event.ts,
            payload=payload,
            client_id=f"rule:{self.rule}",
            principal=self.event.principal,
            raw=raw,
            hops=self.next_hops(),
        )

    def next_hops(self) -> int:
        """The hops of what an action publishes for this delivery; raises ActionError
        (not retryable) once events have passed through ``MAX_HOPS`` rules."""
        if self.event.hops >= MAX_HOPS:
            raise ActionError(
                f"event {self.event.id} has passed through {MAX_HOPS} rules; does a rule"
                " publish into its own topic filter?",
                retryable=False,
            )
        return self.event.hops + 1


# What a function call published: topic, payload, and the payload's encoding.
Published = tuple[str, Any, bytes]


class Notifier(Protocol):
    """Sends outputs to a notification topic's subscribers (``rulebus.notifications``)."""

    async def notify_many(
        self, topic: str, deliveries: Sequence[Delivery], message_ids: Sequence[str]
    ) -> list[Exception | None]: ...


class FunctionHost(Protocol):
    """Calls the app's functions (``rulebus.functions``)."""

    async def invoke_many(
        self, name: str, deliveries: Sequence[Delivery]
    ) -> list[list[Published] | Exception]: ...


@dataclass
class Services:
    """What actions use at run time. The engine never tells them which backend it has."""

    tables: TableStore
    objects: ObjectStore
    notifier: Notifier
    functions: FunctionHost
    publish: Callable[[Sequence[Event]], Awaitable[list[Appended]]]
    log: logging.Logger


class Action(ABC):
    """An action kind: validated once from its options, then run per delivery.

    ``run`` raises :class:`~rulebus.errors.ActionError` on failure, saying
    whether a retry may help. Actions must be idempotent for the same
    delivery: deliveries are at least once.
    """

    kind: ClassVar[str]
    resource: str = ""

    def publishes_to(self) -> str | None:
        """The topic this action always publishes to, if it publishes to a constant one."""
        return None

    async def close(self) -> None:
        """Release what the action opened while running (connections, clients).

        Called when the runtime stops, for every action of its app and of the
        apps a reload replaced (their batches may still be running until then).
        """
        return None

    @classmethod
    @abstractmethod
    def from_options(cls, opts: Options, declared: Declared) -> Action: ...

    async def run(self, delivery: Delivery, index: int, services: Services) -> None:
        """Run for one delivery. Each action overrides ``run`` or ``run_many``."""
        (error,) = await self.run_many([delivery], index, services)
        if error is not None:
            raise error

    async def run_many(
        self, deliveries: Sequence[Delivery], index: int, services: Services
    ) -> list[Exception | None]:
        """Run for each delivery; returns each one's error, or None where it succeeded.

        The default runs them concurrently, one ``run`` each. Actions that can
        do a batch in one go (one transaction, one thread hop) override it.
        """
        if len(deliveries) == 1:
            return [await _capture(self.run(deliveries[0], index, services))]
        return list(
            await asyncio.gather(*(_capture(self.run(d, index, services)) for d in deliveries))
        )


@dataclass(frozen=True)
class Outbound:
    """One message an outbound action renders for one delivery, before it is sent.

    ``target``: where it goes, as a person reads it (``amqp exchange orders,
    key eu``); ``payload``: what is sent (JSON value, or text); ``details``:
    the rest that matters to the receiver (headers, QoS, message id).
    """

    target: str
    payload: Any
    details: dict[str, Any]


class OutboundAction(Action):
    """An action that sends to a system outside rulebus: a broker, a server, a mailbox.

    It renders each delivery into an :class:`Outbound` message (``prepare``:
    templates and checks only, no I/O), then sends the rendered messages in
    one go (``send``), batched where the target allows it. ``rulebus test``
    calls only ``prepare`` and records the messages, so a test touches
    nothing outside. Connections are opened at the first ``send`` and
    released by ``close``.
    """

    async def run_many(
        self, deliveries: Sequence[Delivery], index: int, services: Services
    ) -> list[Exception | None]:
        return await in_one_go(
            deliveries, lambda delivery: self.prepare(delivery, index), self.send
        )

    @abstractmethod
    def prepare(self, delivery: Delivery, index: int) -> Outbound:
        """The message for one delivery; raises ActionError (not retryable) if it cannot
        be made. ``delivery.derived_id(index)`` is a message id stable across retries."""

    @abstractmethod
    async def send(self, messages: list[Outbound]) -> list[Exception | None]:
        """Send the messages; returns each one's error (ActionError saying whether a retry
        may help), or None."""


async def in_one_go(
    deliveries: Sequence[Delivery],
    prepare: Callable[[Delivery], T],
    submit: Callable[[list[T]], Awaitable[list[Exception | None]]],
) -> list[Exception | None]:
    """Prepare each delivery (an ActionError fails that one only), then submit the
    prepared ones together; returns each delivery's error, or None."""
    errors: list[Exception | None] = [None] * len(deliveries)
    prepared: list[T] = []
    positions = []
    for i, delivery in enumerate(deliveries):
        try:
            prepared.append(prepare(delivery))
            positions.append(i)
        except ActionError as exc:
            errors[i] = exc
    if prepared:
        for i, error in zip(positions, await submit(prepared), strict=True):
            errors[i] = error
    return errors


async def _capture(work: Awaitable[None]) -> Exception | None:
    try:
        await work
    except Exception as exc:
        return exc
    return None


def template_option(opts: Options, key: str, *, required: bool = True) -> Template | None:
    """Read a ``${}`` substitution template, reporting a bad one at its key."""
    text = opts.text(key, required=required)
    if not text:
        return None
    try:
        return compile_template(text)
    except SqlError as exc:
        opts.fail(key, f"invalid template: {exc}")


def encode_output(output: Any) -> bytes:
    """The output as JSON bytes, as an action sends it; not retryable if it cannot be."""
    try:
        return codec.dumps(output)
    except codec.EncodeError as exc:
        raise ActionError(f"cannot encode the output: {exc}", retryable=False) from None


def render(template: Template, delivery: Delivery, what: str) -> str:
    try:
        return template.render(delivery.input, delivery.ctx)
    except Exception as exc:
        raise ActionError(f"cannot render {what}: {exc}", retryable=False) from exc


def reference(opts: Options, key: str, known: frozenset[str] | dict[str, Any], what: str) -> str:
    name = opts.text(key, required=True)
    if name not in known:
        names = ", ".join(sorted(known)) or "none declared"
        opts.fail(key, f"unknown {what} {name!r} (declared: {names})")
    return name
