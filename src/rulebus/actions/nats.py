"""``nats``: publish the rule's output to a NATS subject; through JetStream when a stream
holds the subject.

Which stream holds a subject is asked once and kept for a minute. Into a
stream, each message goes as a JetStream publish with ``Nats-Msg-Id`` the same
on every retry of a delivery, so the stream stores a retried message once
(within its duplicate window), and counts as sent when the stream has
acknowledged it. To a subject no stream holds, a core publish counts as sent
when the server has it (a flush): NATS keeps nothing for subscribers that
are not there.
"""

from __future__ import annotations

import asyncio
import time
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
from rulebus.config.options import Options, constant_shape
from rulebus.errors import ActionError
from rulebus.sql import Template

if TYPE_CHECKING:
    from nats.aio.client import Client

# How long the answer to "which stream holds this subject" is kept, and for how many
# subjects (a subject rendered from the event may take many values).
STREAM_TTL = 60.0
STREAMS_KEPT = 10_000


@register
class NatsAction(OutboundAction):
    """Options: ``url`` or ``url_env`` (``nats://`` or ``tls://``), ``subject`` (template)."""

    kind = "nats"

    def __init__(self, url: str, subject: Template) -> None:
        self.url = url
        self.subject = subject
        self.shown = redact(url)
        self.resource = subject.text
        self._connection: Connection[Client] = Connection(self._connect, _disconnect)
        # subject -> (the stream that holds it, or None; when that was asked)
        self._streams: dict[str, tuple[str | None, float]] = {}

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> NatsAction:
        url = server_url(opts, declared, ("nats", "tls"))
        subject = template_option(opts, "subject")
        assert subject is not None
        problem = subject_problem(constant_shape(subject.text))
        if problem is not None:
            opts.fail("subject", f"invalid NATS subject {subject.text!r}: {problem}")
        return cls(url, subject)

    def prepare(self, delivery: Delivery, index: int) -> Outbound:
        subject = render(self.subject, delivery, "subject")
        problem = subject_problem(subject)
        if problem is not None:
            raise ActionError(f"invalid NATS subject {subject[:200]!r}: {problem}", retryable=False)
        headers = {
            "Nats-Msg-Id": delivery.derived_id(index),
            "Rulebus-Event-Id": delivery.event.id,
            "Rulebus-Topic": delivery.event.topic,
        }
        return Outbound(subject, delivery.output, {"headers": headers})

    async def send(self, messages: list[Outbound]) -> list[Exception | None]:
        try:
            client = await self._connection.client()
            if not client.is_connected:
                await self._connection.reset(client)
                client = await self._connection.client()
            streams = await self._streams_of(client, {m.target for m in messages})
        except Exception as exc:
            return [self._error(exc)] * len(messages)
        results = await asyncio.gather(
            *(self._publish(client, m, streams[m.target]) for m in messages),
            return_exceptions=True,
        )
        errors = [None if r is None else self._error(r) for r in results]
        if any(not streams[m.target] for m in messages):
            # Core publishes are sent when the server has them: one flush for all.
            try:
                await client.flush(int(TIMEOUT))
            except Exception as exc:
                flushed = self._error(exc)
                errors = [
                    flushed if error is None and not streams[m.target] else error
                    for m, error in zip(messages, errors, strict=True)
                ]
        if any(e is not None and e.retryable for e in errors) and not client.is_connected:
            await self._connection.reset(client)
        return list(errors)

    async def _publish(self, client: Client, message: Outbound, stream: str | None) -> None:
        payload = encode_output(message.payload)
        headers = message.details["headers"]
        if stream is None:
            await client.publish(message.target, payload, headers=headers)
        else:
            js = client.jetstream(timeout=TIMEOUT)
            await js.publish(message.target, payload, timeout=TIMEOUT, headers=headers)

    async def _streams_of(self, client: Client, subjects: set[str]) -> dict[str, str | None]:
        """The stream that holds each subject (None: none does), asked of the server when
        not known from the last minute."""
        import nats.errors
        import nats.js.errors

        now = time.monotonic()
        known = {s: self._streams.get(s, (None, -STREAM_TTL)) for s in subjects}
        asking = [s for s, (_, when) in known.items() if now - when >= STREAM_TTL]

        async def ask(subject: str) -> str | None:
            try:
                return await client.jetstream(timeout=TIMEOUT).find_stream_name_by_subject(subject)
            except (nats.js.errors.NotFoundError, nats.errors.NoRespondersError):
                return None  # no stream holds it, or the server has no JetStream

        found = await asyncio.gather(*(ask(s) for s in asking))
        if len(self._streams) + len(asking) > STREAMS_KEPT:
            self._streams.clear()
        for subject, stream in zip(asking, found, strict=True):
            self._streams[subject] = known[subject] = (stream, now)
        return {s: stream for s, (stream, _) in known.items()}

    def _error(self, exc: BaseException) -> ActionError:
        """An error of nats-py's as retryable or not."""
        import nats.errors
        import nats.js.errors

        if isinstance(exc, ActionError):
            return exc
        where = f"nats {self.shown}"
        if isinstance(exc, nats.js.errors.APIError):
            # 503: no stream leader, or the stream is full and refuses new messages for now.
            retryable = exc.code is None or exc.code >= 500
            return ActionError(f"{where}: {exc.description or exc}", retryable=retryable)
        if isinstance(exc, nats.errors.NoRespondersError):
            return ActionError(f"{where}: no responders: the stream did not answer")
        if isinstance(exc, nats.errors.TimeoutError | TimeoutError):
            return ActionError(f"{where}: no answer in {TIMEOUT:g} s")
        if isinstance(exc, nats.errors.MaxPayloadError | nats.errors.BadSubjectError):
            return ActionError(f"{where}: {exc}", retryable=False)
        return ActionError(f"{where}: {type(exc).__name__}: {exc}")

    async def _connect(self) -> Client:
        import nats

        async def ignore(*_: Any) -> None:
            """Lost connections are reported by the sends that meet them."""

        return await nats.connect(
            self.url,
            name="rulebus nats action",
            connect_timeout=TIMEOUT,
            # A connection that drops stays closed: the next send opens a new one, so a
            # send never waits on reconnect attempts longer than its own time-out.
            allow_reconnect=False,
            # nats-py tries to connect again and again unless this is positive: with 1,
            # it tries twice, half a second apart, then gives up (NoServersError).
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
            error_cb=ignore,
            disconnected_cb=ignore,
            closed_cb=ignore,
        )

    async def close(self) -> None:
        await self._connection.close()


def subject_problem(subject: str) -> str | None:
    """What makes ``subject`` unfit to publish to, or None."""
    if not subject:
        return "it is empty"
    if any(c.isspace() for c in subject):
        return "it contains white space"
    tokens = subject.split(".")
    if "" in tokens:
        return "it has an empty token (a leading, trailing or double '.')"
    if "*" in tokens or ">" in tokens:
        return "wildcards are for subscriptions"
    return None


async def _disconnect(client: Client) -> None:
    await client.close()
