"""The ``redis_stream`` action against the Redis of this machine (127.0.0.1:6379): entries
with the output, a stable id and a partition key in a templated stream, trimmed with
max_len; a key of the wrong type dead-lettered at once, a server that is down retried;
load-time checks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.actions.apps import check_error, write_app
from tests.runtime.helpers import Server, cli, free_port, wait_until
from tests.services import unavailable

URL = "redis://127.0.0.1:6379/0"
ENV = {"REDIS_URL": URL}
RETRY = "retry: {attempts: 3, backoff: 50ms, max_backoff: 100ms}"


class Redis:
    """A client of the test's own; the test's keys start with ``prefix``."""

    def __init__(self) -> None:
        import redis

        self.client = redis.Redis.from_url(URL, socket_timeout=5)
        self.prefix = f"rb-{uuid.uuid4().hex[:8]}"

    def entries(self, stream: str) -> list[dict[str, Any]]:
        found: list[tuple[bytes, dict[bytes, bytes]]] = self.client.xrange(stream)  # type: ignore[assignment]
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in found]

    def clean(self) -> None:
        keys = list(self.client.scan_iter(f"{self.prefix}*"))
        if keys:
            self.client.delete(*keys)
        self.client.close()


@pytest.fixture
def redis_server() -> Iterator[Redis]:
    import redis

    found = Redis()
    try:
        found.client.ping()
    except redis.RedisError as exc:
        unavailable("Redis on 127.0.0.1:6379", str(exc))
    yield found
    found.clean()


def test_adds_entries_to_a_templated_stream_and_trims_it(
    tmp_path: Path, redis_server: Redis
) -> None:
    """Each event is one entry (payload, id, partition_key) in the stream its topic names;
    with max_len the stream is trimmed near that length (approximately: whole nodes)."""
    prefix = redis_server.prefix
    app = write_app(
        tmp_path,
        f"""
        rules:
          forward:
            sql: SELECT n, device FROM 'readings/+'
            actions:
              - redis_stream:
                  url_env: REDIS_URL
                  stream: "{prefix}-${{topic(2)}}"
                  partition_key: ${{device}}
          trimmed:
            sql: SELECT n FROM 'bulk'
            actions:
              - redis_stream: {{url_env: REDIS_URL, stream: {prefix}-bulk, max_len: 10}}
        """,
    )
    server = Server(app, tmp_path / "data", ENV).start()
    try:
        server.post("/topics/readings/north", {"n": 1, "device": "d-7"})
        server.post("/topics/readings/south", {"n": 2, "device": "d-8"})
        (north,) = wait_until(lambda: redis_server.entries(f"{prefix}-north"), what="an entry")
        assert json.loads(north["payload"]) == {"n": 1, "device": "d-7"}
        assert north["partition_key"] == "d-7" and len(north["id"]) == 36
        (south,) = wait_until(lambda: redis_server.entries(f"{prefix}-south"), what="an entry")
        assert south["partition_key"] == "d-8" and south["id"] != north["id"]

        for n in range(300):
            server.post("/topics/bulk", {"n": n})
        wait_until(server.idle, what="the 300 events processed")
        bulk = redis_server.entries(f"{prefix}-bulk")
        # MAXLEN ~ trims whole nodes of the stream (100 entries each by default).
        assert 10 <= len(bulk) <= 200
        assert json.loads(bulk[-1]["payload"]) in [{"n": n} for n in range(290, 300)]
    finally:
        server.stop()


def test_a_key_of_another_type_is_not_retried_and_a_server_down_is(
    tmp_path: Path, redis_server: Redis
) -> None:
    """XADD to a string key gets WRONGTYPE: dead-lettered after one attempt. A server that
    does not answer fails each attempt, retryable, until the attempts run out."""
    taken = f"{redis_server.prefix}-string"
    redis_server.client.set(taken, "not a stream")
    app = write_app(
        tmp_path,
        f"""
        {RETRY}
        rules:
          wrong:
            sql: SELECT * FROM 'in/wrong'
            actions: [{{redis_stream: {{url_env: REDIS_URL, stream: {taken}}}}}]
          down:
            sql: SELECT * FROM 'in/down'
            actions: [{{redis_stream: {{url_env: DOWN_URL, stream: s}}}}]
        """,
    )
    env = {**ENV, "DOWN_URL": f"redis://127.0.0.1:{free_port()}/0"}
    server = Server(app, tmp_path / "data", env).start()
    try:
        server.post("/topics/in/wrong", {"n": 1})
        server.post("/topics/in/down", {"n": 2})
        letters = wait_until(
            lambda: len(server.dead_letters()) == 2 and server.dead_letters(), what="2 letters"
        )
        by_rule = {letter["rule"]: letter for letter in letters}
        assert by_rule["wrong"]["attempts"] == 1
        (failure,) = by_rule["wrong"]["failures"]
        assert failure["failedAction"] == "redis_stream"
        assert failure["errorMessage"].startswith(f"redis {URL}: WRONGTYPE")
        assert by_rule["down"]["attempts"] == 3
        assert "Connection refused" in by_rule["down"]["failures"][0]["errorMessage"]
        assert redis_server.client.get(taken) == b"not a stream"
    finally:
        server.stop()


def test_bad_options_are_refused_at_load_time_with_file_line_and_key(tmp_path: Path) -> None:
    cases = [
        ("{url: 'amqp://h', stream: s}", "url: expected a redis:// or rediss:// URL"),
        ("{url: 'redis://h:port', stream: s}", "bad port"),
        ("{url_env: REDIS_URL}", "redis_stream.stream: required"),
        ("{url_env: REDIS_URL, stream: '${a'}", "redis_stream.stream: invalid template"),
        ("{url_env: REDIS_URL, stream: s, max_len: 0}", "max_len: expected an integer >= 1"),
        ("{url_env: REDIS_URL, stream: s, partition_key: '${'}", "partition_key: invalid"),
        ("{url_env: REDIS_URL, stream: s, maxlen: 5}", "unknown key; did you mean 'max_len'?"),
    ]
    rule = "rules: {r: {sql: \"SELECT n FROM 'in'\", actions: [{redis_stream: %s}]}}\n"
    for options, expected in cases:
        line = check_error(tmp_path, rule % options, ENV)
        assert "rulebus.yaml:1: " in line and expected in line, (options, line)


def test_rule_tests_record_the_entry_instead_of_adding_it(tmp_path: Path) -> None:
    """``rulebus test`` renders the stream and the fields and sends nothing."""
    rule = "rules: {r: {sql: \"SELECT n FROM 'in/+'\", actions: [{redis_stream: %s}]}}\n"
    app = write_app(tmp_path, rule % "{url: 'redis://127.0.0.1:1/0', stream: 's-${topic(2)}'}")
    sent = {"action": "redis_stream:s-${topic(2)}", "payload": {"n": 1}, "target": "s-a"}
    event = {"topic": "in/a", "payload": {"n": 1}}
    (app / "tests").mkdir()
    (app / "tests" / "r.yaml").write_text(
        json.dumps({"tests": [{"name": "t", "events": [event], "expect": {"sent": [sent]}}]})
    )
    result = cli("test", str(app))
    assert result.returncode == 0, result.stdout + result.stderr
