"""Notification topics: fan a message out to webhooks, email (``rulebus.mail``) and the log.

Webhooks follow Standard Webhooks: ``webhook-id`` (stable across retries, for
receivers to dedupe), ``webhook-timestamp`` and, when the subscriber has
secrets, ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``,
one signature per secret separated by spaces, so a receiver can move from an
old secret to a new one without losing a message.

A webhook is not followed anywhere: a redirect fails the delivery (its
Location is in the message), and a 429 or 503 with ``Retry-After`` times the
next attempt.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import logging
import time
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rulebus import codec
from rulebus.actions.http import render_headers
from rulebus.egress import Egress
from rulebus.errors import ActionError
from rulebus.http_client import HttpClient, deliver
from rulebus.mail import send_many

if TYPE_CHECKING:
    from rulebus.actions.base import Delivery
    from rulebus.template.model import NotificationSpec, SubscriberSpec

SECRET_PREFIX = "whsec_"


@functools.lru_cache(maxsize=64)
def secret_bytes(secret: str) -> bytes:
    """A ``whsec_<base64>`` secret is decoded; any other string is used as UTF-8."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except ValueError:
            pass
    return secret.encode()


def sign(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,`` signature per secret."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digests = (hmac.new(secret_bytes(s), signed, hashlib.sha256).digest() for s in secrets)
    return " ".join("v1," + base64.b64encode(d).decode() for d in digests)


class Notifier:
    """Delivers to every subscriber of a topic; fails if any webhook fails."""

    def __init__(self, topics: dict[str, NotificationSpec], egress: Egress | None = None) -> None:
        self._topics = topics
        self._http = HttpClient(limit=64, egress=egress)
        self._log = logging.getLogger("rulebus.notify")

    def update(self, topics: dict[str, NotificationSpec], egress: Egress) -> None:
        """Take a reloaded app's topics and egress policy (kept-alive connections stay)."""
        self._topics = topics
        self._http.egress = egress

    async def close(self) -> None:
        await self._http.close()

    async def notify_many(
        self, topic: str, deliveries: Sequence[Delivery], message_ids: Sequence[str]
    ) -> list[Exception | None]:
        """Send each delivery's output to every subscriber; returns each delivery's error.

        A delivery fails if any of its webhooks or mails fails; its retry sends
        to all of them again, and receivers drop repeats by ``webhook-id`` or
        ``Message-ID``.
        """
        subscribers = self._topics[topic].subscribers
        logs = any(sub.kind == "log" for sub in subscribers)
        hooks = [sub for sub in subscribers if sub.kind == "webhook"]
        posts = []
        owners = []
        mails = [sub.email for sub in subscribers if sub.email is not None]
        for i, (delivery, message_id) in enumerate(zip(deliveries, message_ids, strict=True)):
            body = codec.dumps(delivery.output)
            if logs:
                self._log.info("%s %s %s", topic, delivery.event.id, body.decode())
            for sub in hooks:
                posts.append(self._post(sub, topic, delivery, message_id, body))
                owners.append(i)
        errors: list[list[BaseException]] = [[] for _ in deliveries]
        # Each email subscriber sends the whole batch in one SMTP session.
        sessions = [send_many(mail, topic, deliveries, message_ids) for mail in mails]
        if not posts and not sessions:
            return [None] * len(deliveries)
        posted, mailed = await asyncio.gather(
            asyncio.gather(*posts, return_exceptions=True), asyncio.gather(*sessions)
        )
        for i, result in zip(owners, posted, strict=True):
            if isinstance(result, BaseException):
                errors[i].append(result)
        for session in mailed:
            for i, error in enumerate(session):
                if error is not None:
                    errors[i].append(error)
        return [_combined(errs) if errs else None for errs in errors]

    async def _post(
        self, sub: SubscriberSpec, topic: str, delivery: Delivery, message_id: str, body: bytes
    ) -> None:
        assert sub.url is not None
        now = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(now),
            "rulebus-event-id": delivery.event.id,
            # Topics may hold any Unicode; headers carry ASCII: receivers percent-decode it.
            "rulebus-topic": urllib.parse.quote(delivery.event.topic, safe="/"),
            "rulebus-notification": topic,
        }
        if sub.secrets:
            headers["webhook-signature"] = sign(sub.secrets, message_id, now, body)
        headers.update(render_headers(sub.headers, delivery))
        await deliver(
            self._http, f"webhook {sub.url}", sub.url, body, headers, sub.timeout, sub.concurrency
        )


def _combined(errors: list[BaseException]) -> ActionError:
    retryable = all(getattr(e, "retryable", True) for e in errors)
    waits = [e.retry_after for e in errors if isinstance(e, ActionError) and e.retry_after]
    return ActionError(
        "; ".join(str(e) for e in errors), retryable=retryable, retry_after=max(waits, default=None)
    )
