"""``redis_stream``: append the rule's output to a Redis stream (XADD), where AWS IoT
puts records into a Kinesis stream.

Each entry has the fields ``payload`` (the output as JSON), ``id`` (the same
on every retry of a delivery) and, if given, ``partition_key``. XADD cannot
drop repeats: a retry after a reply that was lost adds a second entry with
the same ``id``, which consumers drop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    import redis.asyncio
    from redis.typing import EncodableT, FieldT

# Error replies that say the server cannot take writes for now (out of memory, a
# replica, loading its data, a script running), not that the command is wrong.
_PASSING = ("OOM", "READONLY", "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")


@register
class RedisStreamAction(OutboundAction):
    """Options: ``url`` or ``url_env`` (``redis://`` or ``rediss://``), ``stream``
    (template), ``max_len`` (approximate trim), ``partition_key`` (template)."""

    kind = "redis_stream"

    def __init__(
        self, url: str, stream: Template, max_len: int | None, partition_key: Template | None
    ) -> None:
        self.url = url
        self.stream = stream
        self.max_len = max_len
        self.partition_key = partition_key
        self.shown = redact(url)
        self.resource = stream.text
        self._connection: Connection[redis.asyncio.Redis] = Connection(self._connect, _disconnect)

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> RedisStreamAction:
        url = server_url(opts, declared, ("redis", "rediss"))
        stream = template_option(opts, "stream")
        assert stream is not None
        max_len = opts.integer("max_len", 1, minimum=1) if opts.has("max_len") else None
        partition_key = template_option(opts, "partition_key", required=False)
        return cls(url, stream, max_len, partition_key)

    def prepare(self, delivery: Delivery, index: int) -> Outbound:
        stream = render(self.stream, delivery, "stream")
        if not stream:
            raise ActionError("the stream name renders empty", retryable=False)
        fields = {"id": delivery.derived_id(index)}
        if self.partition_key is not None:
            fields["partition_key"] = render(self.partition_key, delivery, "partition_key")
        return Outbound(stream, delivery.output, {"fields": fields, "max_len": self.max_len})

    async def send(self, messages: list[Outbound]) -> list[Exception | None]:
        import redis.exceptions

        errors: list[Exception | None] = [None] * len(messages)
        client = await self._connection.client()
        # One round trip for the batch; no MULTI: each entry stands on its own.
        pipeline = client.pipeline(transaction=False)
        queued = []
        for i, message in enumerate(messages):
            try:
                payload = encode_output(message.payload)
            except ActionError as exc:
                errors[i] = exc
                continue
            fields: dict[FieldT, EncodableT] = {"payload": payload}
            fields.update(message.details["fields"])
            pipeline.xadd(message.target, fields, maxlen=self.max_len, approximate=True)
            queued.append(i)
        if not queued:
            return errors
        try:
            replies = await pipeline.execute(raise_on_error=False)
        except (redis.exceptions.RedisError, OSError) as exc:
            # The connection failed: the pool opens a new one for the next send.
            failed = ActionError(f"redis {self.shown}: {exc}")
            return [failed if i in queued else error for i, error in enumerate(errors)]
        for i, reply in zip(queued, replies, strict=True):
            if isinstance(reply, Exception):
                reason = str(reply)
                retryable = reason.startswith(_PASSING)
                errors[i] = ActionError(f"redis {self.shown}: {reason}", retryable=retryable)
        return errors

    async def _connect(self) -> redis.asyncio.Redis:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside the client: a failed send is retried by the rule's backoff.
        return redis.asyncio.Redis.from_url(
            self.url,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )

    async def close(self) -> None:
        await self._connection.close()


async def _disconnect(client: redis.asyncio.Redis) -> None:
    await client.aclose()
