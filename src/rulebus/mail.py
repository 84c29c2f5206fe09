"""Email subscribers of notification topics: each message a mail sent over SMTP.

A batch of a topic's messages goes out in one SMTP session per subscriber
(connect, TLS, login once; then one transaction per message). Each mail's
``Message-ID`` is made from the delivery's message id, the same on every
retry, so a mail sent again after a lost answer can be spotted as a repeat.

SMTP says itself what a retry may fix: a 4xx reply is transient, a 5xx
permanent (an unknown mailbox, a refused login); a lost connection or a
time-out is retryable.
"""

from __future__ import annotations

import email.utils
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import orjson

from rulebus.actions.base import render, template_option, warning
from rulebus.config.options import Options
from rulebus.errors import ActionError, SqlError
from rulebus.sql import Template, compile_template

if TYPE_CHECKING:
    from rulebus.actions.base import Delivery

SCHEMES = {"smtp": 25, "smtps": 465}


@dataclass(frozen=True)
class EmailSpec:
    """An email subscriber: where the SMTP server is, who gets the mail, what it says."""

    host: str
    port: int
    tls: bool  # smtps: TLS from the start
    starttls: bool
    username: str | None
    password: str | None
    sender: str
    to: tuple[Template, ...]
    subject: Template
    timeout: float

    @property
    def server(self) -> str:
        scheme = "smtps" if self.tls else "smtp"
        return f"{scheme}://{self.host}:{self.port}"


def read_email(sub: Options, topic: str, smtp: str | None, warnings: list[str]) -> EmailSpec:
    """The options of an email subscriber; ``smtp`` is its ``smtp`` or ``smtp_env`` URL."""
    if smtp is None:
        sub.fail(None, "an email subscriber needs smtp (smtp://host:port or smtps://) or smtp_env")
    parts = urllib.parse.urlsplit(smtp)
    key = "smtp" if sub.has("smtp") else "smtp_env"
    try:
        port = parts.port
    except ValueError:
        port = -1
    whole = port != -1 and parts.path in ("", "/") and not parts.query
    if parts.scheme not in SCHEMES or not parts.hostname or not whole:
        shown = repr(smtp) if key == "smtp" else f"the URL in {sub.value[key]}"
        sub.fail(key, f"expected smtp://host:port or smtps://host:port, got {shown}")
    if key == "smtp" and parts.password:
        warnings.append(
            warning(sub, key, "a password written in the app file: use smtp_env or password_env")
        )
    starttls = sub.flag("starttls", False)
    if starttls and parts.scheme == "smtps":
        sub.fail("starttls", "smtps:// is TLS from the start: starttls is for smtp://")
    username = _secret(sub, "username_env", warnings) or _unquote(parts.username)
    password = _secret(sub, "password_env", warnings) or _unquote(parts.password)
    sender = sub.text("from", required=True)
    if not _is_address(sender):
        sub.fail("from", f"expected an email address, got {sender!r}")
    return EmailSpec(
        host=parts.hostname,
        port=port or SCHEMES[parts.scheme],
        tls=parts.scheme == "smtps",
        starttls=starttls,
        username=username,
        password=password,
        sender=sender,
        to=_recipients(sub),
        subject=template_option(sub, "subject", required=False)
        or compile_template(f"rulebus: {topic}"),
        timeout=sub.duration("timeout", 30.0),
    )


def _recipients(sub: Options) -> tuple[Template, ...]:
    """``to``: a list of addresses, or one ``${}`` template that renders to addresses
    separated by commas."""
    if sub.raw("to") is None:
        sub.missing("to", "a list of email addresses, or a template")
    texts = sub.str_list("to")
    if not texts:
        sub.fail("to", "expected at least one address")
    templates = []
    for text in texts:
        try:
            template = compile_template(text)
        except SqlError as exc:
            sub.fail("to", f"invalid template: {exc}")
        if template.is_constant and not all(_is_address(a) for a in _addresses(text)):
            sub.fail("to", f"expected email addresses, got {text!r}")
        templates.append(template)
    return tuple(templates)


def _secret(sub: Options, key: str, warnings: list[str]) -> str | None:
    variable = sub.optional_str(key)
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        warnings.append(warning(sub, key, f"{variable} is not set"))
    return value or None


def _unquote(text: str | None) -> str | None:
    return urllib.parse.unquote(text) if text else None


def _addresses(text: str) -> list[str]:
    return [a.strip() for a in text.split(",") if a.strip()]


def _is_address(text: str) -> bool:
    address = email.utils.parseaddr(text)[1]
    return "@" in address and text.isprintable() and address.count("@") == 1


def compose(
    spec: EmailSpec, topic: str, delivery: Delivery, message_id: str
) -> tuple[EmailMessage, list[str]]:
    """The mail for one delivery and its recipients; raises ActionError (not retryable)
    when a recipient or the subject cannot be rendered or sent."""
    recipients = []
    for template in spec.to:
        for address in _addresses(render(template, delivery, "recipient")):
            if not _is_address(address):
                raise ActionError(f"email: not an email address: {address!r}", retryable=False)
            recipients.append(address)
    if not recipients:
        raise ActionError("email: the recipients rendered empty", retryable=False)
    mail = EmailMessage()
    try:
        mail["From"] = spec.sender
        mail["To"] = ", ".join(recipients)
        mail["Subject"] = render(spec.subject, delivery, "subject")
    except ValueError as exc:  # a line break in a header: it would start another one
        raise ActionError(f"email: {exc}", retryable=False) from None
    mail["Date"] = email.utils.formatdate(delivery.event.ts / 1000, usegmt=True)
    mail["Message-ID"] = f"<{message_id}@rulebus>"
    mail["X-Rulebus-Event-Id"] = delivery.event.id
    mail["X-Rulebus-Notification"] = topic
    try:
        body = orjson.dumps(delivery.output, option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONEncodeError as exc:
        raise ActionError(f"email: cannot encode the output: {exc}", retryable=False) from None
    mail.set_content(body + "\n")
    return mail, recipients


async def send_many(
    spec: EmailSpec, topic: str, deliveries: Sequence[Delivery], message_ids: Sequence[str]
) -> list[Exception | None]:
    """Send each delivery's mail in one SMTP session; returns each one's error, or None."""
    import aiosmtplib

    errors: list[Exception | None] = [None] * len(deliveries)
    mails = []
    for i, (delivery, message_id) in enumerate(zip(deliveries, message_ids, strict=True)):
        try:
            mails.append((i, *compose(spec, topic, delivery, message_id)))
        except ActionError as exc:
            errors[i] = exc
    if not mails:
        return errors
    client = aiosmtplib.SMTP(
        hostname=spec.host,
        port=spec.port,
        use_tls=spec.tls,
        start_tls=spec.starttls,
        timeout=spec.timeout,
    )
    try:
        await client.connect()
        if spec.username is not None and spec.password is not None:
            await client.login(spec.username, spec.password)
    except Exception as exc:
        failure = _failure(spec, exc)
        for i, _, _ in mails:
            errors[i] = failure
        client.close()
        return errors
    try:
        for n, (i, mail, recipients) in enumerate(mails):
            try:
                refused, _ = await client.send_message(mail, recipients=recipients)
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
                errors[i] = _failure(spec, exc)  # this mail only: the session goes on
                continue
            except Exception as exc:
                # The session is gone: this mail and the rest fail, to be retried.
                for j, _, _ in mails[n:]:
                    errors[j] = _failure(spec, exc)
                return errors
            if refused:
                errors[i] = _refused(spec, refused)
        await client.quit()
    except Exception:
        client.close()  # every mail was handed over: a failed QUIT loses none
    return errors


def _refused(spec: EmailSpec, refused: dict[str, Any]) -> ActionError:
    """Some recipients refused (the others got the mail): retryable if every refusal
    is transient; a retry sends to all again, with the same Message-ID."""
    codes = {address: reply.code for address, reply in refused.items()}
    described = ", ".join(f"{address} ({code})" for address, code in codes.items())
    return ActionError(
        f"email via {spec.server}: refused recipients {described}",
        retryable=all(400 <= code < 500 for code in codes.values()),
    )


def _failure(spec: EmailSpec, exc: Exception) -> ActionError:
    import aiosmtplib

    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return _refused(spec, {r.recipient: r for r in exc.recipients})
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 500:
        return ActionError(
            f"email via {spec.server}: {exc.code} {exc.message}".strip(), retryable=False
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return ActionError(f"email via {spec.server}: {exc.code} {exc.message}".strip())
    return ActionError(f"email via {spec.server}: {type(exc).__name__}: {exc}")
