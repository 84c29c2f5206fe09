"""The exchange example end to end, through HTTP and the CLI."""

import json
from pathlib import Path

from fraud import is_fraud

from tests.runtime.conftest import SECRET
from tests.runtime.helpers import (
    EXCHANGE,
    Receiver,
    Server,
    verify_signature,
    wait_until,
)


def test_every_event_is_archived_and_flagged_buys_are_archived_and_notified(
    exchange: Server, receiver: Receiver
) -> None:
    """Every event lands in the table; each flagged buy becomes an object and a signed webhook."""
    run_exchange_flow(exchange, receiver)


def test_the_whole_flow_works_in_a_single_process(
    tmp_path: Path, receiver: Receiver, backends: dict[str, str]
) -> None:
    """``up --single-process`` runs the engine beside the API with the same results."""
    env = {
        **backends,
        "RULEBUS_FRAUD_WEBHOOK_URL": receiver.url,
        "RULEBUS_FRAUD_WEBHOOK_SECRET": SECRET,
    }
    server = Server(EXCHANGE, tmp_path / "data", env, "--single-process").start()
    try:
        assert server.worker_pids() == []
        run_exchange_flow(server, receiver)
    finally:
        server.stop()


def run_exchange_flow(exchange: Server, receiver: Receiver) -> None:
    ids = {}
    for i in range(40):
        kind = "buy" if i % 2 == 0 else "sell"
        response = exchange.post("/event", {"type": kind, "price": 100 + i})
        assert response.status_code == 202, response.text
        ids[response.json()["id"]] = kind
    fraud = {id_ for id_, kind in ids.items() if kind == "buy" and is_fraud(id_)}
    assert 0 < len(fraud) < 20  # the deterministic coin flip really flips

    wait_until(lambda: len(receiver.received) >= len(fraud) and exchange.idle(), what="pipeline")

    rows = exchange.scan("events")
    assert {row["id"]: row["type"] for row in rows} == ids
    assert all(row["price"] >= 100 for row in rows)

    keys = exchange.cli("bucket", "ls", "fraud-archive", check=True).stdout
    assert sorted(keys.split()) == sorted(f"{id_}.json" for id_ in fraud)
    some = next(iter(fraud))
    body = exchange.cli("bucket", "get", "fraud-archive", f"{some}.json", check=True).stdout
    assert json.loads(body)["id"] == some

    assert sorted(r.json()["id"] for r in receiver.received) == sorted(fraud)
    for delivery in receiver.received:
        assert verify_signature(SECRET, delivery.headers, delivery.body)
        assert delivery.headers["rulebus-topic"] == "alert/fraud"

    # The topic's log subscriber writes a line per notification.
    def logged() -> list[str]:
        return [line for line in exchange.output if "INFO rulebus.notify: fraud-alerts " in line]

    wait_until(lambda: len(logged()) >= len(fraud), what="log lines")
    assert sorted(json.loads(line.split(" ", 6)[6])["id"] for line in logged()) == sorted(fraud)
    # Nothing failed on the way, not even something a retry then fixed.
    assert [line for line in exchange.output if " ERROR " in line or "WARNING" in line] == []


def test_an_event_id_given_by_the_client_is_kept_and_a_repeat_is_a_duplicate(
    exchange: Server,
) -> None:
    """Posting the same id twice stores one event: the second answer says duplicate."""
    first = exchange.post("/event", {"type": "sell", "id": "order-1", "price": 5})
    again = exchange.post("/event", {"type": "sell", "id": "order-1", "price": 5})
    assert first.status_code == 202 and first.json()["duplicate"] is False
    assert again.status_code == 200 and again.json()["duplicate"] is True
    wait_until(exchange.idle, what="pipeline")
    assert [row["id"] for row in exchange.scan("events")] == ["order-1"]


def test_batch_ingest_accepts_good_items_and_reports_each_bad_one(exchange: Server) -> None:
    """A batch with bad items stores the good ones and answers 207 with an error per bad item."""
    response = exchange.post(
        "/events", [{"type": "buy", "price": 1}, {"price": 2}, "nope", {"type": "sell"}]
    )
    assert response.status_code == 207
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    results = body["results"]
    assert "id" in results[0] and "id" in results[3]
    assert results[1]["error"] == "missing required field 'type'"
    assert results[2]["error"] == "expected a JSON object, got a string"
    wait_until(lambda: len(exchange.scan("events")) == 2, what="two rows")


def test_batch_ingest_takes_ndjson(exchange: Server) -> None:
    """NDJSON bodies are one event per line."""
    lines = b'{"type":"sell","price":1}\n{"type":"sell","price":2}\n'
    response = exchange.post(
        "/events", content=lines, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2


def test_generic_publish_reaches_rules_listening_on_that_topic(exchange: Server) -> None:
    """POST /topics/{topic} publishes any JSON; the archive rule picks up event/* topics."""
    response = exchange.post("/topics/event/refund", {"id": "r-1", "amount": 3})
    assert response.status_code == 202
    wait_until(lambda: exchange.scan("events"), what="row")
    assert exchange.scan("events") == [{"id": "r-1", "amount": 3}]


def test_cli_publish_is_processed_by_the_running_app(exchange: Server) -> None:
    """``rulebus publish`` appends to the bus and the running engine picks it up."""
    result = exchange.cli("publish", "event/sell", '{"id": "cli-1", "type": "sell"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["topic"] == "event/sell"
    wait_until(lambda: exchange.scan("events"), what="row")
    assert exchange.scan("events")[0]["id"] == "cli-1"


def test_health(exchange: Server) -> None:
    """GET /healthz answers while the app runs."""
    assert exchange.get("/healthz").json() == {"status": "ok", "app": "exchange"}
