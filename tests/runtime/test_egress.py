"""Webhooks reach public addresses and the networks an app allows, follow no redirect,
wait as long as Retry-After asks, and sign with every secret while one is rotated."""

from __future__ import annotations

import email.utils
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.helpers import Receiver, Server, cli, verify_signature, wait_until

OLD_SECRET = "whsec_b2xkLXNlY3JldC1vZi10aGUtcm90YXRpb24tdGVzdA=="
NEW_SECRET = "whsec_bmV3LXNlY3JldC1vZi10aGUtcm90YXRpb24tdGVzdA=="

# Each URL, and what the refusal must call its address. {port} is a live
# receiver's: had anything been let through, that receiver would have seen it.
REFUSED = [
    # IPv4
    ("http://127.0.0.1:{port}/hook", "127.0.0.1 is loopback"),
    ("http://127.9.9.9:{port}/hook", "127.9.9.9 is loopback"),
    ("http://2130706433:{port}/hook", "resolves to 127.0.0.1 is loopback"),
    ("http://0x7f.1:{port}/hook", "resolves to 127.0.0.1 is loopback"),
    ("http://0.0.0.0:{port}/hook", "0.0.0.0 is unspecified"),
    ("http://10.0.0.1/hook", "10.0.0.1 is private"),
    ("http://172.16.5.4/hook", "172.16.5.4 is private"),
    ("http://192.168.0.1/hook", "192.168.0.1 is private"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
    ("http://100.64.0.1/hook", "100.64.0.1 is shared address space"),
    ("http://224.0.0.1/hook", "224.0.0.1 is multicast"),
    ("http://255.255.255.255/hook", "255.255.255.255 is reserved"),
    ("http://192.0.2.1/hook", "192.0.2.1 is not globally routable"),
    # IPv6, and IPv6 forms that carry an IPv4 address
    ("http://[::1]:{port}/hook", "::1 is loopback"),
    ("http://[::]:{port}/hook", ":: is unspecified"),
    ("http://[fe80::1]/hook", "fe80::1 is link-local"),
    ("http://[fd00::1]/hook", "fd00::1 is private"),
    ("http://[ff02::1]/hook", "ff02::1 is multicast"),
    ("http://[2001:db8::1]/hook", "2001:db8::1 is not globally routable"),
    ("http://[::ffff:127.0.0.1]:{port}/hook", "is loopback (as 127.0.0.1)"),
    ("http://[::ffff:169.254.169.254]/hook", "is link-local (cloud metadata lives here) (as"),
    ("http://[64:ff9b::a9fe:a9fe]/hook", "is link-local (cloud metadata lives here) (as 169.254"),
    ("http://[2002:a00:1::]/hook", "is private (as 10.0.0.1)"),
    # Names that resolve inside
    ("http://localhost:{port}/hook", "localhost is loopback"),
    ("http://LOCALHOST.:{port}/hook", "localhost. is loopback"),
    ("http://api.localhost:{port}/hook", "api.localhost is loopback"),
]


def _own_name() -> list[tuple[str, str]]:
    """This machine's own name, when it resolves to an address refused by default."""
    name = socket.gethostname()
    try:
        address = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        return []
    if not address.startswith(("127.", "10.", "172.", "192.168.", "::1", "fe80", "fd")):
        return []
    return [(f"http://{name}:{{port}}/hook", f"{name} resolves to {address} is")]


def probe_app(tmp_path: Path, urls: list[str], allow: list[str] | None = None) -> Path:
    """One notification and one rule per URL: ``probe/N`` notifies the Nth URL."""
    lines = []
    if allow is not None:
        lines.append(f"egress: {{allow: [{', '.join(allow)}]}}")
    lines += ["retry: {attempts: 3, backoff: 50ms, max_backoff: 100ms}", "notifications:"]
    for i, url in enumerate(urls):
        lines += [f"  n{i}:", "    subscribers:", f"      - webhook: {{url: '{url}', timeout: 2s}}"]
    lines.append("rules:")
    for i in range(len(urls)):
        lines += [
            f"  r{i}:",
            f"    sql: SELECT * FROM 'probe/{i}'",
            f"    actions: [{{notify: {{topic: n{i}}}}}]",
        ]
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "rulebus.yaml").write_text("\n".join(lines) + "\n")
    return app


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def failures_by_rule(server: Server) -> dict[str, tuple[int, str]]:
    """Each dead letter's rule: its attempts and failure messages."""
    return {
        letter["rule"]: (
            letter["attempts"],
            "; ".join(f["errorMessage"] for f in letter["failures"]),
        )
        for letter in server.dead_letters()
    }


def test_webhooks_into_internal_networks_are_refused_before_connecting(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Every loopback, private, link-local, metadata, multicast or otherwise non-public
    target, as an IPv4 or IPv6 literal or a name that resolves inside, fails at once
    with the reason, is dead-lettered without retries, and nothing is sent."""
    port = receiver.url.split(":")[2].split("/")[0]
    cases = [(url.format(port=port), why) for url, why in REFUSED + _own_name()]
    server = Server(probe_app(tmp_path, [u for u, _ in cases]), tmp_path / "data").start()
    try:
        for i in range(len(cases)):
            assert server.post(f"/topics/probe/{i}", {"n": i}).status_code == 202
        wait_until(lambda: len(server.dead_letters()) == len(cases), what="all dead letters")
        letters = failures_by_rule(server)
        for i, (url, why) in enumerate(cases):
            attempts, message = letters[f"r{i}"]
            assert "refused to connect" in message and why in message, (url, message)
            assert attempts == 1, (url, message)
        assert receiver.attempts == 0
    finally:
        server.stop()


def test_an_allowed_network_is_reached_and_nothing_beyond_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    """``egress: {allow: [127.0.0.0/8]}`` lets loopback IPv4 through; IPv6 loopback and
    the private network stay refused."""
    port = receiver.url.split(":")[2].split("/")[0]
    urls = [receiver.url, f"http://[::1]:{port}/hook", "http://10.0.0.1/hook"]
    app = probe_app(tmp_path, urls, allow=["127.0.0.0/8"])
    server = Server(app, tmp_path / "data").start()
    try:
        for i in range(len(urls)):
            server.post(f"/topics/probe/{i}", {"n": i})
        wait_until(lambda: receiver.received and len(server.dead_letters()) == 2, what="outcomes")
        assert [r.json() for r in receiver.received] == [{"n": 0}]
        letters = failures_by_rule(server)
        assert "::1 is loopback" in letters["r1"][1]
        assert "10.0.0.1 is private" in letters["r2"][1]
    finally:
        server.stop()


def test_a_redirect_is_a_failure_that_names_where_it_pointed(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A 3xx is not followed (it could point anywhere), not retried, and says where."""
    receiver.answers = [(302, {"location": "http://169.254.169.254/latest/meta-data/"})]
    server = Server(probe_app(tmp_path, [receiver.url], ["127.0.0.0/8"]), tmp_path / "data")
    server.start()
    try:
        server.post("/topics/probe/0", {"n": 0})
        letters = wait_until(lambda: failures_by_rule(server), what="dead letter")
        attempts, message = letters["r0"]
        assert attempts == 1
        assert "answered 302, redirecting to http://169.254.169.254/latest/meta-data/" in message
        assert "redirects are not followed" in message
        assert receiver.attempts == 1 and receiver.received == []
    finally:
        server.stop()


def test_retry_after_on_429_and_503_sets_the_next_attempt(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The backoff is 50 ms, but the receiver asks for 2 s (503, in seconds), then for
    a time 6 s after the first attempt (429, an HTTP date): no attempt comes sooner."""
    receiver.answers = [(503, {"retry-after": "2"})]
    server = Server(probe_app(tmp_path, [receiver.url], ["127.0.0.0/8"]), tmp_path / "data")
    server.start()
    try:
        server.post("/topics/probe/0", {"n": 0})
        wait_until(lambda: receiver.attempts >= 1, what="first attempt")
        receiver.answers.append(
            (429, {"retry-after": email.utils.formatdate(time.time() + 6, usegmt=True)})
        )
        wait_until(lambda: receiver.received, what="delivery", timeout=20)
        first, second, third = receiver.times
        assert second - first >= 1.9
        # The date was made 6 s after the first attempt began, whole seconds only.
        assert third - first >= 4.9
        assert server.dead_letters() == []
    finally:
        server.stop()


def test_every_secret_signs_while_one_is_rotated(tmp_path: Path, receiver: Receiver) -> None:
    """With two secrets, both signatures are in ``webhook-signature``, so receivers on
    the old secret and on the new one both verify; from a list or from one variable."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(
        textwrap.dedent(
            f"""
            egress: {{allow: [127.0.0.0/8]}}
            notifications:
              listed:
                subscribers:
                  - webhook: {{url: "{receiver.url}", secret: [{OLD_SECRET}, {NEW_SECRET}]}}
              from-env:
                subscribers:
                  - webhook: {{url: "{receiver.url}", secret_env: HOOK_SECRETS}}
            rules:
              listed:
                sql: SELECT * FROM 'rotate/listed'
                actions: [{{notify: {{topic: listed}}}}]
              from-env:
                sql: SELECT * FROM 'rotate/env'
                actions: [{{notify: {{topic: from-env}}}}]
            """
        )
    )
    env = {"HOOK_SECRETS": f"{NEW_SECRET} {OLD_SECRET}"}
    server = Server(app, tmp_path / "data", env).start()
    try:
        server.post("/topics/rotate/listed", {"n": 1})
        server.post("/topics/rotate/env", {"n": 2})
        wait_until(lambda: len(receiver.received) == 2, what="deliveries")
        for received in receiver.received:
            assert len(received.headers["webhook-signature"].split()) == 2
            assert verify_signature(OLD_SECRET, received.headers, received.body)
            assert verify_signature(NEW_SECRET, received.headers, received.body)
            other = "whsec_" + "b3RoZXItc2VjcmV0LW5vYm9keS1oYXM="
            assert not verify_signature(other, received.headers, received.body)
    finally:
        server.stop()


def test_check_flags_a_literal_url_into_a_refused_network(tmp_path: Path) -> None:
    """``rulebus check`` warns, with file and line, about a webhook that can only fail."""
    app = probe_app(tmp_path, ["http://169.254.169.254/latest", "http://localhost:9000/h"])
    result = cli("check", str(app))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "will be refused" in line]
    assert len(warnings) == 2, result.stderr
    assert "rulebus.yaml:5:" in warnings[0] and "169.254.169.254 is link-local" in warnings[0]
    assert "rulebus.yaml:8:" in warnings[1] and "localhost is loopback" in warnings[1]

    allowed = probe_app(tmp_path, ["http://localhost:9000/h"], allow=["127.0.0.0/8"])
    assert "will be refused" not in cli("check", str(allowed)).stderr


def test_a_bad_network_in_the_allow_list_is_refused_with_its_line(tmp_path: Path) -> None:
    app = probe_app(tmp_path, ["https://hooks.example.com/h"], allow=["10.0.0.1/8"])
    result = cli("check", str(app))
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "rulebus.yaml:1" in line and "egress.allow" in line and "10.0.0.1/8" in line
