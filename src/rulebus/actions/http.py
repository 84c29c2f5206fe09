"""``http``: POST the rule's output as JSON to a ``${}`` URL, as AWS IoT's HTTP action does.

Requests go through the webhooks' client (``rulebus.http_client``): the same
egress policy, the same mapping of answers to retryable or not, and one count
of requests in flight per host and port for the whole process. Webhook
subscribers take the same ``headers`` and ``max_concurrency`` options, read
here by ``read_headers`` and ``read_concurrency``.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from typing import Any

from rulebus import codec
from rulebus.actions.base import (
    Declared,
    Delivery,
    Outbound,
    OutboundAction,
    render,
    template_option,
    warning,
)
from rulebus.actions.registry import register
from rulebus.config.options import Options, constant_shape
from rulebus.egress import Egress
from rulebus.errors import ActionError, BadInput
from rulebus.http_client import HttpClient, HttpError, Origin, check_headers, deliver
from rulebus.sql import Template

DEFAULT_CONCURRENCY = 64
# Headers the client writes itself, or that would change how the body is read.
_FRAMING = ("host", "content-length", "transfer-encoding", "connection")
# Headers rulebus sets for receivers to rely on (dedupe, signatures, provenance).
_OWN_PREFIXES = ("webhook-", "rulebus-", "x-rulebus-")

Headers = dict[str, Template | str]


@register
class HttpAction(OutboundAction):
    """Options: ``url`` (template) or ``url_env``, ``headers``, ``timeout``, ``max_concurrency``.

    Each request carries ``x-rulebus-message-id``, the same on every retry of
    a delivery, so the receiver can drop repeats.
    """

    kind = "http"

    def __init__(
        self,
        url: Template | str,
        resource: str,
        headers: Headers,
        timeout: float,
        concurrency: int,
        egress: Egress,
    ) -> None:
        self.url = url
        self.resource = resource
        self.headers = headers
        self.timeout = timeout
        self.concurrency = concurrency
        self.egress = egress
        self._client: HttpClient | None = None

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> HttpAction:
        url: Template | str
        if opts.has("url_env"):
            if opts.has("url"):
                opts.fail("url_env", "give either url or url_env, not both")
            variable = opts.text("url_env", required=True)
            url = os.environ.get(variable, "")
            if not url:
                opts.fail("url_env", f"the environment variable {variable} is not set")
            resource = f"${variable}"
            shown = f"the URL in {variable}"
            check_url(opts, "url_env", url, shown, declared.egress, declared.warnings)
        else:
            template = template_option(opts, "url")
            assert template is not None
            url = template.text if template.is_constant else template
            resource = template.text
            shape = constant_shape(template.text)
            check_url(opts, "url", shape, repr(template.text), declared.egress, declared.warnings)
        return cls(
            url,
            resource,
            read_headers(opts, declared.warnings),
            opts.duration("timeout", 10.0),
            read_concurrency(opts),
            declared.egress,
        )

    def prepare(self, delivery: Delivery, index: int) -> Outbound:
        url = self.url if isinstance(self.url, str) else render(self.url, delivery, "url")
        try:
            Origin.parse(url)
        except HttpError as exc:
            raise ActionError(str(exc), retryable=False) from None
        headers = {
            "content-type": "application/json",
            "x-rulebus-message-id": delivery.derived_id(index),
            "rulebus-event-id": delivery.event.id,
            # Topics may hold any Unicode; headers carry ASCII: receivers percent-decode it.
            "rulebus-topic": urllib.parse.quote(delivery.event.topic, safe="/"),
            **render_headers(self.headers, delivery),
        }
        return Outbound(url, delivery.output, {"headers": headers})

    async def send(self, messages: list[Outbound]) -> list[Exception | None]:
        if self._client is None:
            self._client = HttpClient(limit=self.concurrency, egress=self.egress)
        results = await asyncio.gather(
            *(self._post(self._client, message) for message in messages), return_exceptions=True
        )
        return [r if isinstance(r, Exception) else None for r in results]

    async def _post(self, client: HttpClient, message: Outbound) -> None:
        try:
            body = codec.dumps(message.payload)
        except codec.EncodeError as exc:
            raise ActionError(f"cannot encode the output: {exc}", retryable=False) from None
        url = message.target
        headers = message.details["headers"]
        await deliver(client, f"http {url}", url, body, headers, self.timeout, self.concurrency)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def check_url(
    opts: Options, key: str, url: str, shown: str, egress: Egress, warnings: list[str]
) -> None:
    """Fail at ``key`` unless ``url`` is http(s) with a host; warn when egress refuses its host.

    ``url`` may be a template's constant shape: a ``${}`` host cannot be checked.
    ``shown`` is how messages name it (a URL from the environment may hold a password).
    """
    parsed = urllib.parse.urlsplit(url)
    spaced = any(c.isspace() for c in url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or spaced:
        opts.fail(key, f"expected an http:// or https:// URL with a host, got {shown}")
    refused = egress.literal_refusal(parsed.hostname)
    if refused is not None:
        warnings.append(warning(opts, key, f"requests to {shown} will be refused: {refused}"))


def read_concurrency(opts: Options) -> int:
    """``max_concurrency``: requests at once to the URL's host and port, counted for the
    whole process."""
    return opts.integer("max_concurrency", DEFAULT_CONCURRENCY, minimum=1)


def read_headers(opts: Options, warnings: list[str]) -> Headers:
    """``headers: {Name: TEMPLATE or {env: VARIABLE}}``, names lowercased (HTTP does not
    tell them apart by case), constant parts checked as the client will check them."""
    section = opts.section("headers")
    headers: Headers = {}
    for name in section.value:
        value = section.raw(name)
        lower = str(name).lower()
        try:
            check_headers({lower: "x"})
        except BadInput:
            section.fail(name, f"{name!r} is not a valid header name")
        if lower in headers:
            section.fail(name, f"header {name!r} is given twice (names are not case-sensitive)")
        if lower in _FRAMING or lower.startswith(_OWN_PREFIXES):
            section.fail(name, f"rulebus sets the {name!r} header itself")
        if isinstance(value, dict):
            text = _env_header(section, name, value, warnings)
            if text is not None:
                headers[lower] = text
            continue
        template = template_option(section, name)
        assert template is not None
        try:
            check_headers({lower: constant_shape(template.text)})
        except BadInput:
            section.fail(name, "control or non-ASCII characters in the value")
        headers[lower] = template.text if template.is_constant else template
    section.done()
    return headers


def _env_header(section: Options, name: str, value: Any, warnings: list[str]) -> str | None:
    env = Options(section.source, (*section.path, name), value)
    variable = env.text("env", required=True)
    env.done()
    text = os.environ.get(variable)
    if text is None:
        warnings.append(
            warning(section, name, f"{variable} is not set: the {name} header is not sent")
        )
        return None
    try:
        check_headers({name: text})
    except BadInput:
        # The message must not quote the value: it is likely a secret.
        section.fail(name, f"{variable} holds control or non-ASCII characters")
    return text


def render_headers(headers: Headers, delivery: Delivery) -> dict[str, str]:
    """The headers for one delivery; raises ActionError (not retryable) for a value that
    cannot be rendered or sent."""
    out = {
        name: value if isinstance(value, str) else render(value, delivery, f"header {name!r}")
        for name, value in headers.items()
    }
    try:
        check_headers(out)
    except BadInput as exc:
        raise ActionError(exc.message, retryable=False) from None
    return out
