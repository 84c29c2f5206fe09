"""Email subscribers against a real SMTP server (aiosmtpd, in this process): one session
per batch, templated recipients and subject, login from the environment, a stable
Message-ID, STARTTLS and SMTPS, 4xx retried and 5xx not, and load-time checks."""

from __future__ import annotations

import email
import email.policy
import json
import ssl
import textwrap
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.runtime.helpers import Server, cli, free_port, make_certificate, wait_until


class Mailbox:
    """What the SMTP server was told: sessions, logins, and the mails it took.

    A recipient ``later@…`` is refused with 451 the first ``later`` times it is
    given; ``nobody@…`` always with 550.
    """

    def __init__(self) -> None:
        self.sessions = 0
        self.logins: list[tuple[str, str]] = []
        self.mails: list[EmailMessage] = []
        self.later = 1
        self.lock = threading.Lock()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("later@"):
            with self.lock:
                if self.later > 0:
                    self.later -= 1
                    return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        with self.lock:
            self.mails.append(mail)
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.logins.append((data.login.decode(), data.password.decode()))
            return AuthResult(success=data.password == b"hunter2")
        return AuthResult(success=False)


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    """A plain SMTP server on a free port that takes a login without TLS."""
    box = Mailbox()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=box.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield box, controller.port
    controller.stop()


def write_app(tmp_path: Path, *subscribers: str) -> Path:
    """An app whose ``alerts/+`` events are notified to these email subscribers."""
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    listed = "\n              - email: ".join(subscribers)
    text = f"""
        retry: {{attempts: 2, backoff: 50ms, max_backoff: 50ms}}
        notifications:
          alerts:
            subscribers:
              - email: {listed}
        rules:
          alert:
            sql: SELECT * FROM 'alerts/+'
            actions: [{{notify: {{topic: alerts}}}}]
        api:
          routes:
            - {{path: /alert, batch_path: /alerts, topic: "alerts/${{kind}}", auth: none}}
        """
    (app / "rulebus.yaml").write_text(textwrap.dedent(text))
    return app


def test_a_batch_goes_in_one_session_with_rendered_recipients_and_subject(
    tmp_path: Path, mailbox: tuple[Mailbox, int]
) -> None:
    """Five alerts posted together are five mails in one SMTP session, after one login
    with credentials from the environment; each mail says who, what and which event."""
    box, port = mailbox
    subscriber = (
        f"{{smtp: 'smtp://127.0.0.1:{port}', from: rulebus@example.com,"
        " to: '${owner}, ops@example.com', subject: 'Alert ${kind}: ${n}',"
        " username_env: SMTP_USER, password_env: SMTP_PASSWORD}"
    )
    env = {"SMTP_USER": "rulebus", "SMTP_PASSWORD": "hunter2"}
    server = Server(write_app(tmp_path, subscriber), tmp_path / "data", env, "--workers", "1")
    server.start()
    try:
        alerts = [{"kind": "disk", "n": n, "owner": f"owner{n}@example.com"} for n in range(5)]
        answer = server.post("/alerts", alerts)
        assert answer.status_code == 200, answer.text
        ids = [item["id"] for item in answer.json()["results"]]
        wait_until(lambda: len(box.mails) == 5, what="five mails")
        assert box.sessions == 1 and box.logins == [("rulebus", "hunter2")]
        by_event = {mail["X-Rulebus-Event-Id"]: mail for mail in box.mails}
        for n, event_id in enumerate(ids):
            mail = by_event[event_id]
            assert mail["From"] == "rulebus@example.com"
            assert mail["To"] == f"owner{n}@example.com, ops@example.com"
            assert mail["Subject"] == f"Alert disk: {n}"
            assert mail["X-Rulebus-Notification"] == "alerts"
            assert mail["Message-ID"].endswith("@rulebus>")
            assert mail.get_content_type() == "text/plain"
            body = mail.get_content()
            assert json.loads(body) == {**alerts[n], "id": event_id}
            assert "\n  " in body  # pretty, for people
        assert len({mail["Message-ID"] for mail in box.mails}) == 5
    finally:
        server.stop()


def test_a_4xx_reply_is_retried_with_the_same_message_id_and_a_5xx_is_not(
    tmp_path: Path, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    subscriber = f"{{smtp: 'smtp://127.0.0.1:{port}', from: a@example.com, to: '${{to}}'}}"
    server = Server(write_app(tmp_path, subscriber), tmp_path / "data").start()
    try:
        server.post("/alert", {"kind": "x", "to": "later@example.com"})
        wait_until(lambda: box.mails, what="the mail after a 451")
        (mail,) = box.mails
        assert mail["Subject"] == "rulebus: alerts"
        assert box.later == 0  # refused once, then taken

        server.post("/alert", {"kind": "y", "to": "nobody@example.com"})
        (letter,) = wait_until(server.dead_letters, what="a dead letter")
        assert letter["attempts"] == 1
        message = letter["failures"][0]["errorMessage"]
        assert f"email via smtp://127.0.0.1:{port}: refused recipients" in message
        assert "nobody@example.com (550)" in message
    finally:
        server.stop()


def test_an_unreachable_server_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    subscriber = f"{{smtp: 'smtp://127.0.0.1:{port}', from: a@example.com, to: [b@example.com]}}"
    server = Server(write_app(tmp_path, subscriber), tmp_path / "data").start()
    try:
        server.post("/alert", {"kind": "x"})
        (letter,) = wait_until(server.dead_letters, what="a dead letter")
        assert letter["attempts"] == 2
        assert (
            f"email via smtp://127.0.0.1:{port}: SMTPConnect"
            in (letter["failures"][0]["errorMessage"])
        )
    finally:
        server.stop()


def test_starttls_and_smtps(tmp_path: Path) -> None:
    """Mail goes over STARTTLS to a server that requires it, and over TLS from the
    start (smtps://), with the server's certificate checked against the CA."""
    cert, key, ca = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    starttls_box, smtps_box = Mailbox(), Mailbox()
    starttls = Controller(
        starttls_box,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
    )
    smtps = Controller(smtps_box, hostname="127.0.0.1", port=free_port(), ssl_context=context)
    starttls.start()
    smtps.start()
    try:
        subscriber = (
            f"{{smtp: 'smtp://localhost:{starttls.port}', starttls: true,"
            " from: a@example.com, to: [b@example.com]}"
        )
        second = f"{{smtp: 'smtps://localhost:{smtps.port}', from: a@example.com, to: [c@b.org]}}"
        app = write_app(tmp_path, subscriber, second)
        server = Server(app, tmp_path / "data", {"SSL_CERT_FILE": str(ca)}).start()
        server.post("/alert", {"kind": "x"})
        wait_until(lambda: starttls_box.mails and smtps_box.mails, what="both mails")
        assert server.dead_letters() == []
        server.stop()
    finally:
        starttls.stop()
        smtps.stop()


def check(tmp_path: Path, subscriber: str) -> Any:
    return cli("check", str(write_app(tmp_path, subscriber)))


def test_bad_options_are_refused_with_file_line_and_key(tmp_path: Path) -> None:
    base = "from: a@example.com, to: [b@example.com]"
    cases = [
        (f"{{smtp: 'http://mail.example.com', {base}}}", "email.smtp: expected smtp://host:port"),
        (f"{{{base}}}", "needs smtp (smtp://host:port or smtps://) or smtp_env"),
        ("{smtp: 'smtp://m.example.com', from: nobody, to: [b@example.com]}", "email.from:"),
        ("{smtp: 'smtp://m.example.com', from: a@example.com}", "email.to: required"),
        ("{smtp: 'smtp://m.example.com', from: a@example.com, to: [x]}", "expected email addr"),
        (f"{{smtp: 'smtps://m.example.com', starttls: true, {base}}}", "starttls is for smtp://"),
        (f"{{smtp: 'smtp://m.example.com', subject: '${{', {base}}}", "email.subject: invalid"),
        (f"{{smtp: 'smtp://m.example.com', to_list: [], {base}}}", "unknown key"),
    ]
    for subscriber, expected in cases:
        result = check(tmp_path, subscriber)
        assert result.returncode == 2, (subscriber, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and "rulebus.yaml:6: notifications.alerts" in line, line
        assert expected in line, (subscriber, line)
    result = check(tmp_path, f"{{smtp: 'smtp://u:pw@m.example.com:587', {base}}}")
    assert result.returncode == 0, result.stderr
    assert "rulebus.yaml:6: a password written in the app file" in result.stderr
