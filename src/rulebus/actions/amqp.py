"""``amqp``: publish the rule's output to a RabbitMQ (AMQP 0-9-1) exchange or queue, where
AWS IoT sends to an SQS queue.

Publisher confirms are on: a message counts as sent once the broker has
confirmed it, that is, taken responsibility for it (for a persistent message
to a durable queue: written to disk). Messages are published ``mandatory``,
so one that no queue takes comes back and fails instead of vanishing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from rulebus.actions.base import (
    Declared,
    Delivery,
    Outbound,
    OutboundAction,
    encode_output,
    render,
    template_option,
)
from rulebus.actions.registry import register
from rulebus.actions.remote import TIMEOUT, Connection, server_url
from rulebus.backends.registry import redact
from rulebus.config.options import Options
from rulebus.errors import ActionError
from rulebus.sql import Template

if TYPE_CHECKING:
    import aio_pika

# AMQP's short strings (exchange, queue and routing key) hold at most 255 bytes.
MAX_NAME = 255


@register
class AmqpAction(OutboundAction):
    """Options: ``url`` or ``url_env`` (``amqp://`` or ``amqps://``), then either ``queue``
    or ``exchange`` (default ``""``, the default exchange) with ``routing_key``
    (template); ``persistent`` (default true)."""

    kind = "amqp"

    def __init__(
        self, url: str, exchange: str, routing_key: Template | None, queue: str, persistent: bool
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.routing_key = routing_key
        self.queue = queue
        self.persistent = persistent
        self.shown = redact(url)
        key = "" if routing_key is None else routing_key.text
        self.resource = f"queue {queue}" if queue else f"exchange {exchange!r} key {key}"
        self._connection: Connection[_Channel] = Connection(self._connect, _disconnect)

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> AmqpAction:
        url = server_url(opts, declared, ("amqp", "amqps"))
        queue = opts.text("queue")
        if queue:
            for key in ("exchange", "routing_key"):
                if opts.has(key):
                    opts.fail(key, f"give either queue or {key}, not both")
            routing_key = None
        elif opts.has("routing_key"):
            routing_key = template_option(opts, "routing_key")
        else:
            opts.missing("routing_key", "a routing key template, or queue")
        exchange = opts.raw("exchange", "")
        if not isinstance(exchange, str):
            opts.fail("exchange", f"expected an exchange name, got {exchange!r}")
        for key, name in (("queue", queue), ("exchange", exchange)):
            if len(name.encode()) > MAX_NAME:
                opts.fail(key, f"longer than {MAX_NAME} bytes")
        return cls(url, exchange, routing_key, queue, opts.flag("persistent", True))

    def prepare(self, delivery: Delivery, index: int) -> Outbound:
        if self.routing_key is None:
            key, target = self.queue, f"queue {self.queue}"
        else:
            key = render(self.routing_key, delivery, "routing_key")
            if len(key.encode()) > MAX_NAME:
                raise ActionError(f"routing key longer than {MAX_NAME} bytes", retryable=False)
            target = f"exchange {self.exchange or '(default)'}, key {key}"
        details = {
            "routing_key": key,
            "message_id": delivery.derived_id(index),
            "persistent": self.persistent,
            "headers": {
                "rulebus-event-id": delivery.event.id,
                "rulebus-topic": delivery.event.topic,
            },
        }
        return Outbound(target, delivery.output, details)

    async def send(self, messages: list[Outbound]) -> list[Exception | None]:
        try:
            channel = await self._connection.client()
        except Exception as exc:
            return [self._error(exc)] * len(messages)
        results = await asyncio.gather(
            *(self._publish(channel, message) for message in messages), return_exceptions=True
        )
        errors = [None if r is None else self._error(r) for r in results]
        if channel.channel.is_closed or any(e is not None and e.retryable for e in errors):
            # The broker closes a channel on an error (an unknown exchange); a
            # new connection also serves a lost one.
            await self._connection.reset(channel)
        return list(errors)

    async def _publish(self, channel: _Channel, message: Outbound) -> None:
        import aio_pika

        body = encode_output(message.payload)
        details = message.details
        mode = aio_pika.DeliveryMode.PERSISTENT if self.persistent else None
        amqp_message = aio_pika.Message(
            body,
            content_type="application/json",
            message_id=details["message_id"],
            delivery_mode=mode,
            headers=details["headers"],
            app_id="rulebus",
        )
        await channel.exchange.publish(
            amqp_message, details["routing_key"], mandatory=True, timeout=TIMEOUT
        )

    async def _connect(self) -> _Channel:
        import aio_pika
        import aiormq

        connection = await aio_pika.connect(self.url, timeout=TIMEOUT)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            if self.queue:
                try:
                    await channel.declare_queue(self.queue, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    # A queue that exists is left as it is (durable or not); a missing
                    # one is made durable, so that persistent messages survive a restart.
                    channel = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    await channel.declare_queue(self.queue, durable=True)
                exchange = channel.default_exchange
            elif self.exchange:
                # Not declared: the exchange and its bindings are the broker's setup.
                exchange = await channel.get_exchange(self.exchange, ensure=False)
            else:
                exchange = channel.default_exchange
        except BaseException:
            await connection.close()
            raise
        return _Channel(connection, channel, exchange)

    def _error(self, exc: BaseException) -> ActionError:
        """An error of aio-pika's as retryable or not."""
        import aiormq

        if isinstance(exc, ActionError):
            return exc
        where = f"amqp {self.shown}"
        if isinstance(exc, aiormq.exceptions.DeliveryError):
            frame: Any = exc.frame
            if frame is not None and frame.name == "Basic.Return":
                # No queue takes it: a missing queue or binding. Not retried; once it
                # exists, `rulebus dlq redrive` sends the dead letters again.
                return ActionError(
                    f"{where}: unroutable: no queue bound to exchange {frame.exchange!r} for"
                    f" key {frame.routing_key!r} ({frame.reply_text})",
                    retryable=False,
                )
            return ActionError(f"{where}: the broker refused the message (nack)")
        if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
            return ActionError(f"{where}: login refused", retryable=False)
        if isinstance(exc, aiormq.exceptions.AMQPChannelError) and exc.args:
            # The broker refused an operation (NOT_FOUND, ACCESS_REFUSED, PRECONDITION_FAILED):
            # a retry gets the same answer.
            return ActionError(f"{where}: {exc.args[0]}", retryable=False)
        if isinstance(exc, TimeoutError):
            return ActionError(f"{where}: no answer from the broker in {TIMEOUT:g} s")
        return ActionError(f"{where}: {type(exc).__name__}: {exc}")

    async def close(self) -> None:
        await self._connection.close()


class _Channel:
    """A connection, the confirming channel opened on it, and the exchange to publish to."""

    def __init__(
        self,
        connection: aio_pika.abc.AbstractConnection,
        channel: aio_pika.abc.AbstractChannel,
        exchange: aio_pika.abc.AbstractExchange,
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.exchange = exchange


async def _disconnect(channel: _Channel) -> None:
    await channel.connection.close()
