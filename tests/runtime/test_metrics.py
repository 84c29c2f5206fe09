"""GET /metrics: exact counts from every process of a host, and gauges read from the bus."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import httpx

from tests.distributed.helpers import Deployment
from tests.runtime.helpers import Receiver, Server, make_key, scrape, value, wait_until

APP = """
egress: {allow: [127.0.0.0/8]}
tables:
  readings: {key: [id]}
  high: {key: [id]}
rules:
  archive:
    sql: SELECT * FROM 'readings/+'
    actions:
      - table: {name: readings}
  high:
    sql: SELECT * FROM 'readings/+' WHERE value >= 90
    actions:
      - table: {name: high}
api:
  routes:
    - path: /reading
      topic: readings/${site}
      batch_path: /readings
      auth: none
"""

FAILING = """
egress: {{allow: [127.0.0.0/8]}}
notifications:
  recovers:
    subscribers:
      - webhook: {{url: "{recovers}", timeout: 2s}}
  broken:
    subscribers:
      - webhook: {{url: "{broken}", timeout: 2s}}
retry:
  attempts: 2
  backoff: 50ms
  max_backoff: 100ms
rules:
  to-recovers:
    sql: SELECT * FROM 'a/+'
    actions:
      - notify: {{topic: recovers}}
  to-broken:
    sql: SELECT * FROM 'b/+'
    actions:
      - notify: {{topic: broken}}
"""


def write_app(tmp_path: Path, text: str) -> Path:
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "rulebus.yaml").write_text(textwrap.dedent(text))
    return app


def readings(start: int, count: int) -> list[dict[str, object]]:
    """``count`` readings with ids of their own; every tenth is high (value 95)."""
    return [
        {"id": f"r-{n}", "site": f"s{n % 3}", "value": 95 if n % 10 == 0 else 20}
        for n in range(start, start + count)
    ]


def test_counts_are_exact_across_two_engine_processes(tmp_path: Path) -> None:
    """Events ingested per route and outcome, rule matches and action runs add up to
    exactly what was sent, although two engine processes and the API counted them."""
    server = Server(write_app(tmp_path, APP), tmp_path / "data", None, "--workers", "2").start()
    try:
        batch = readings(0, 600)
        for start in range(0, 600, 200):
            assert server.post("/readings", batch[start : start + 200]).status_code == 200
        for event in readings(600, 5):
            assert server.post("/reading", event).status_code == 202
        assert server.post("/reading", readings(600, 1)[0]).status_code == 200  # a repeat
        assert server.post("/reading", {"value": 1}).status_code == 400  # no site
        mixed = [*readings(605, 3), {"value": 2}]
        assert server.post("/readings", mixed).status_code == 207
        wait_until(server.idle, what="every event dispatched")

        samples = scrape(server.url, server.key)
        ingested = "rulebus_events_ingested_total"
        assert value(samples, ingested, route="/readings", status="accepted") == 603
        assert value(samples, ingested, route="/readings", status="rejected") == 1
        assert value(samples, ingested, route="/reading", status="accepted") == 5
        assert value(samples, ingested, route="/reading", status="duplicate") == 1
        assert value(samples, ingested, route="/reading", status="rejected") == 1

        stored, high = 608, 61  # readings 0-607; every tenth is high
        assert value(samples, "rulebus_rule_matches_total", rule="archive") == stored
        assert value(samples, "rulebus_rule_matches_total", rule="high") == high
        runs = "rulebus_action_runs_total"
        assert value(samples, runs, rule="archive", action="table:readings", outcome="ok") == stored
        assert value(samples, runs, rule="high", action="table:high", outcome="ok") == high
        assert value(samples, runs, rule="archive", action="table:readings", outcome="failed") == 0
        # One observation per call of an action: a call covers a batch's deliveries.
        calls = value(
            samples, "rulebus_action_seconds_count", rule="archive", action="table:readings"
        )
        assert 2 <= calls <= stored
        inf = value(
            samples,
            "rulebus_action_seconds_bucket",
            rule="archive",
            action="table:readings",
            le="+Inf",
        )
        assert inf == calls
        assert (
            value(samples, "rulebus_action_seconds_sum", rule="archive", action="table:readings")
            > 0
        )
        assert value(samples, "rulebus_dispatch_lag_seconds") == 0
        assert value(samples, "rulebus_retries_pending") == 0
        assert value(samples, "rulebus_dead_letters") == 0
    finally:
        server.stop()


def test_action_outcomes_say_what_failed_was_retried_and_dead_lettered(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """A receiver that answers 500 once and then 204 counts failed, retried and ok; one
    that always answers 500 counts two failures, one retry and a dead letter."""
    recovers = Receiver(answers=[(500, {})])
    broken = Receiver(status=500)
    text = FAILING.format(recovers=recovers.url, broken=broken.url)
    server = Server(write_app(tmp_path, text), tmp_path / "data", backends).start()
    try:
        assert server.post("/topics/a/x", {"id": "a-1"}).status_code == 202
        assert server.post("/topics/b/x", {"id": "b-1"}).status_code == 202
        wait_until(lambda: server.dead_letters() and server.idle(), what="the dead letter")
        assert len(recovers.received) == 1 and broken.attempts == 2

        samples = scrape(server.url, server.key)
        runs = "rulebus_action_runs_total"
        good = {"rule": "to-recovers", "action": "notify:recovers"}
        assert [value(samples, runs, **good, outcome=o) for o in OUTCOMES] == [1, 1, 1, 0]
        bad = {"rule": "to-broken", "action": "notify:broken"}
        assert [value(samples, runs, **bad, outcome=o) for o in OUTCOMES] == [0, 2, 1, 1]
        assert value(samples, "rulebus_action_seconds_count", **bad) == 2
        assert value(samples, "rulebus_dead_letters") == 1
        assert value(samples, "rulebus_retries_pending") == 0
    finally:
        server.stop()
        recovers.close()
        broken.close()


OUTCOMES = ("ok", "failed", "retried", "dead_lettered")


def test_metrics_need_the_metrics_or_admin_scope(tmp_path: Path) -> None:
    """Without a key /metrics answers 401; a key with neither scope 403; either scope 200."""
    data = tmp_path / "data"
    server = Server(write_app(tmp_path, APP), data).start()
    try:
        assert server.get("/metrics", key="").status_code == 401
        ingest_only = make_key(data, name="ingest-only", scopes=("ingest", "publish"))
        refused = server.get("/metrics", key=ingest_only)
        assert refused.status_code == 403
        assert "'metrics' or 'admin' scope" in refused.json()["error"]
        for scope in ("metrics", "admin"):
            key = make_key(data, name=f"{scope}-only", scopes=(scope,))
            assert server.get("/metrics", key=key).status_code == 200
    finally:
        server.stop()


def test_an_app_can_turn_metrics_off(tmp_path: Path) -> None:
    """With ``metrics: {enabled: false}`` nothing is counted and /metrics answers 404."""
    app = write_app(tmp_path, APP + "metrics: {enabled: false}\n")
    server = Server(app, tmp_path / "data").start()
    try:
        assert server.post("/reading", readings(0, 1)[0]).status_code == 202
        wait_until(server.idle, what="the event dispatched")
        answer = server.get("/metrics")
        assert answer.status_code == 404
        assert "metrics: {enabled: false}" in answer.json()["error"]
        assert not (tmp_path / "data" / "metrics").exists()
    finally:
        server.stop()


def test_lag_grows_without_an_engine_and_the_api_counts_a_separate_worker(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """``rulebus api`` alone: the oldest event waits, so the lag is its age. Once a
    ``rulebus worker`` on the same data directory dispatched it, the lag is 0 and the
    API's /metrics has the worker's counts."""
    deployment = Deployment("lag", write_app(tmp_path, APP), tmp_path / "data", backends)
    try:
        api = deployment.api()
        answer = httpx.post(api.url + "/readings", json=readings(0, 10), timeout=30)
        assert answer.status_code == 200
        time.sleep(0.3)
        samples = scrape(api.url, api.key)
        assert value(samples, "rulebus_dispatch_lag_seconds") >= 0.3
        assert value(samples, "rulebus_rule_matches_total", rule="archive") == 0

        deployment.worker()
        wait_until(lambda: api.stats()["dispatched"] >= api.stats()["head"], what="dispatch")
        samples = scrape(api.url, api.key)
        assert value(samples, "rulebus_dispatch_lag_seconds") == 0
        assert value(samples, "rulebus_rule_matches_total", rule="archive") == 10
        assert (
            value(samples, "rulebus_events_ingested_total", route="/readings", status="accepted")
            == 10
        )
    finally:
        deployment.close()


def test_counts_survive_an_engine_process_killed_and_restarted(tmp_path: Path) -> None:
    """An engine process killed with SIGKILL leaves its counts behind: after the
    supervisor restarted it, the totals are exact, nothing lost and nothing twice."""
    server = Server(write_app(tmp_path, APP), tmp_path / "data", None, "--workers", "2").start()
    try:
        assert server.post("/readings", readings(0, 300)).status_code == 200
        wait_until(server.idle, what="the first events dispatched")
        before = value(scrape(server.url, server.key), "rulebus_rule_matches_total", rule="archive")
        assert before == 300

        old = server.worker_pids()
        victim = old[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(),
            what="the engine process restarted",
        )
        assert server.post("/readings", readings(300, 300)).status_code == 200
        wait_until(server.idle, what="the next events dispatched")
        samples = scrape(server.url, server.key)
        assert value(samples, "rulebus_rule_matches_total", rule="archive") == 600
        runs = value(
            samples,
            "rulebus_action_runs_total",
            rule="archive",
            action="table:readings",
            outcome="ok",
        )
        assert runs == 600
        assert len(server.scan("readings")) == 600
    finally:
        server.stop()
