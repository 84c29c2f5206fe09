"""The ``http`` action against a real HTTP receiver: templated URL and headers, headers
from the environment, one concurrency limit per target shared with webhooks,
Retry-After, failures that are not retried, egress and load-time checks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.runtime.helpers import Receiver, Server, cli, wait_until

ALLOW = "egress: {allow: [127.0.0.0/8]}"


def write_app(tmp_path: Path, body: str) -> Path:
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "rulebus.yaml").write_text(textwrap.dedent(body))
    return app


def origin(receiver: Receiver) -> str:
    return receiver.url.removesuffix("/hook")


def test_posts_the_output_to_a_templated_url_with_templated_and_secret_headers(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The URL and a header are rendered from the event, a header comes from an
    environment variable, and the message id stays the same across retries."""
    receiver.fail_first = 1
    app = write_app(
        tmp_path,
        f"""
        {ALLOW}
        retry: {{attempts: 3, backoff: 50ms, max_backoff: 100ms}}
        rules:
          forward:
            sql: SELECT id, qty * 2 AS double FROM 'orders/+'
            actions:
              - http:
                  url: "{origin(receiver)}/orders/${{topic(2)}}/${{id}}?source=rulebus"
                  headers:
                    Authorization: {{env: ORDERS_TOKEN}}
                    X-Region: "eu-${{topic(2)}}"
        """,
    )
    server = Server(app, tmp_path / "data", {"ORDERS_TOKEN": "Bearer s3cret"}).start()
    try:
        event = server.post("/topics/orders/north", {"id": "o-1", "qty": 4}).json()
        wait_until(lambda: receiver.received, what="the POST")
        (got,) = receiver.received
        assert got.path == "/orders/north/o-1?source=rulebus"
        assert got.json() == {"id": "o-1", "double": 8}
        headers = {k.lower(): v for k, v in got.headers.items()}
        assert headers["authorization"] == "Bearer s3cret"
        assert headers["x-region"] == "eu-north"
        assert headers["content-type"] == "application/json"
        assert headers["rulebus-event-id"] == event["id"]
        assert headers["rulebus-topic"] == "orders/north"
        assert receiver.attempts == 2  # a 503 first: retried with the same message id
        assert len(headers["x-rulebus-message-id"]) == 36
    finally:
        server.stop()


def test_max_concurrency_bounds_requests_to_a_target_across_actions_and_webhooks(
    tmp_path: Path, receiver: Receiver
) -> None:
    """An http action and a webhook to the same host and port share one count: with
    max_concurrency 3 on both, the receiver never holds more than 3 requests at once."""
    receiver.delay = 0.3
    app = write_app(
        tmp_path,
        f"""
        {ALLOW}
        notifications:
          hooks:
            subscribers:
              - webhook:
                  url: "{receiver.url}"
                  max_concurrency: 3
                  headers: {{X-Source: "webhook-${{n}}"}}
        rules:
          forward:
            sql: SELECT * FROM 'jobs/#'
            actions:
              - http: {{url: "{origin(receiver)}/jobs", max_concurrency: 3}}
              - notify: {{topic: hooks}}
        """,
    )
    # One engine process: the limit counts the requests of one process.
    server = Server(app, tmp_path / "data", None, "--workers", "1").start()
    try:
        for n in range(10):
            assert server.post("/topics/jobs/a", {"n": n}).status_code == 202
        wait_until(lambda: len(receiver.received) == 20, timeout=30, what="20 requests")
        assert receiver.most_at_once == 3
        hooks = [r for r in receiver.received if r.path == "/hook"]
        assert sorted(r.headers["x-source"] for r in hooks) == sorted(
            f"webhook-{n}" for n in range(10)
        )
    finally:
        server.stop()


def test_503_with_retry_after_waits_and_400_is_not_retried(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A 503 with Retry-After: 1 puts the next attempt a second later (not the 50 ms
    backoff); a 400 fails at once into the dead letters, with the status."""
    app = write_app(
        tmp_path,
        f"""
        {ALLOW}
        retry: {{attempts: 3, backoff: 50ms, max_backoff: 100ms}}
        rules:
          slow:
            sql: SELECT * FROM 'in/slow'
            actions: [{{http: {{url: "{origin(receiver)}/slow"}}}}]
          bad:
            sql: SELECT * FROM 'in/bad'
            actions: [{{http: {{url: "{origin(receiver)}/bad"}}}}]
        """,
    )
    receiver.answers = [(503, {"retry-after": "1"})]
    server = Server(app, tmp_path / "data").start()
    try:
        server.post("/topics/in/slow", {"n": 1})
        wait_until(lambda: receiver.received, what="the delivery after Retry-After")
        first, second = receiver.times
        assert second - first >= 0.95

        receiver.answers = [(400, {})]
        server.post("/topics/in/bad", {"n": 2})
        (letter,) = wait_until(server.dead_letters, what="a dead letter")
        assert letter["rule"] == "bad" and letter["attempts"] == 1
        (failure,) = letter["failures"]
        assert failure["failedAction"] == "http"
        assert failure["errorMessage"] == f"http {origin(receiver)}/bad answered 400"
        assert receiver.attempts == 3
    finally:
        server.stop()


def test_a_refused_address_fails_without_sending_and_check_warns(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Without egress.allow, loopback is refused: rulebus check warns at the URL's line,
    and a delivery is dead-lettered at once with the reason; nothing reaches the receiver."""
    app = write_app(
        tmp_path,
        f"""
        rules:
          forward:
            sql: SELECT * FROM 'in/#'
            actions:
              - http: {{url: "{origin(receiver)}/x"}}
        """,
    )
    checked = cli("check", str(app))
    assert checked.returncode == 0, checked.stderr
    assert f"rulebus.yaml:6: requests to '{origin(receiver)}/x' will be refused" in checked.stderr
    server = Server(app, tmp_path / "data").start()
    try:
        server.post("/topics/in/a", {"n": 1})
        (letter,) = wait_until(server.dead_letters, what="a dead letter")
        assert letter["attempts"] == 1
        assert "refused to connect: 127.0.0.1 is loopback" in letter["failures"][0]["errorMessage"]
        assert receiver.attempts == 0
    finally:
        server.stop()


def one_action(tmp_path: Path, http: str) -> Path:
    """An app whose one rule, on ``orders/+``, has one http action with these options."""
    rule = "rules: {forward: {sql: \"SELECT id FROM 'orders/+'\", actions: [{http: %s}]}}\n"
    return write_app(tmp_path, rule % http)


def bad_option(tmp_path: Path, http: str, env: dict[str, str] | None = None) -> str:
    result = cli("check", str(one_action(tmp_path, http)), env=env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    return line


def test_bad_options_are_refused_at_load_time_with_file_line_and_key(tmp_path: Path) -> None:
    cases = [
        ("{url: 'ftp://example.com/x'}", "forward.actions[0].http.url: expected an http://"),
        ("{url: 'https://${host'}", "forward.actions[0].http.url: invalid template"),
        ("{url: https://a.example, headers: {'Bad Name': x}}", "'Bad Name' is not a valid header"),
        ("{url: https://a.example, headers: {Host: x}}", "rulebus sets the 'Host' header itself"),
        ("{url: https://a.example, headers: {X-A: a, x-a: b}}", "is given twice"),
        ("{url: https://a.example, max_concurrency: 0}", "max_concurrency: expected an integer"),
        ("{url: https://a.example, url_env: X}", "give either url or url_env"),
        ("{url_env: NO_SUCH_VARIABLE_HERE}", "NO_SUCH_VARIABLE_HERE is not set"),
        ("{url: https://a.example, timeout: 0}", "timeout: expected a positive duration"),
        ("{url: https://a.example, header: {}}", "unknown key; did you mean 'headers'?"),
    ]
    for http, expected in cases:
        line = bad_option(tmp_path, http)
        assert line.startswith("error: ") and "rulebus.yaml:" in line, line
        assert expected in line, (http, line)
    # A secret from the environment is never quoted in a message.
    line = bad_option(
        tmp_path, "{url: https://a.example, headers: {Authorization: {env: T}}}", {"T": "s\nx"}
    )
    assert "T holds control or non-ASCII characters" in line and "s\\nx" not in line


def test_an_unset_header_variable_is_a_warning(tmp_path: Path) -> None:
    app = one_action(tmp_path, "{url: https://a.example, headers: {Authorization: {env: NO_T}}}")
    result = cli("check", str(app))
    assert result.returncode == 0, result.stderr
    assert "rulebus.yaml:1: NO_T is not set: the Authorization header is not sent" in result.stderr


def test_rule_tests_record_the_request_instead_of_sending_it(tmp_path: Path) -> None:
    """``rulebus test`` renders the URL and headers and sends nothing."""
    options = '{url: "https://api.example.com/orders/${id}", headers: {X-Kind: "${kind}"}}'
    app = one_action(tmp_path, options)
    event = {"topic": "orders/eu", "payload": {"id": "o-7", "kind": "buy"}}
    sent = {
        "action": "http:https://api.example.com/orders/${id}",
        "payload": {"id": "o-7"},
        "target": "https://api.example.com/orders/o-7",
    }
    (app / "tests").mkdir()
    (app / "tests" / "forward.yaml").write_text(
        json.dumps({"tests": [{"name": "fwd", "events": [event], "expect": {"sent": [sent]}}]})
    )
    result = cli("test", str(app))
    assert result.returncode == 0, result.stdout + result.stderr
