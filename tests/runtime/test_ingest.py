"""Bad input over HTTP gets a 4xx that says what was wrong, and never hurts the process.

The tests that look only at the answers share one server per set of backends
(``shared_exchange``); those that look at what was stored get their own.
"""

import time
import uuid

import pytest

from tests.runtime.helpers import Server, wait_until


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "invalid JSON"),
        (b"", 400, "empty body"),
        (b"[1, 2]", 400, "expected a JSON object, got an array"),
        (b'"buy"', 400, "expected a JSON object, got a string"),
        (b'{"price": 1}', 400, "missing required field 'type'"),
        (b'{"type": null}', 400, "missing required field 'type'"),
        (b'{"type": "a/b"}', 400, "invalid topic level 'a/b'"),
        (b'{"type": "+"}', 400, "invalid topic level '+'"),
        (b'{"type": "#"}', 400, "invalid topic level '#'"),
        (b'{"type": ""}', 400, "invalid topic level ''"),
        (b'{"type": "$SYS"}', 400, "invalid topic level '$SYS'"),
        (b'{"type": "buy\\u0000"}', 400, "invalid topic level"),
        (b'{"type": "buy\\n"}', 400, "invalid topic level"),
        (b'{"type": "a b"}', 400, "invalid topic level"),
        (b'{"type": "a.b"}', 400, "invalid topic level"),
        (b'{"type": {"a": 1}}', 400, "invalid topic level"),
        (b'{"type": "' + b"x" * 200 + b'"}', 400, "invalid topic level"),
        (b'{"type": "buy", "qty": 123456789012345678901234567890}', 400, "does not fit in 64 bits"),
        (b'{"type": "buy", "price": 1e400}', 400, "invalid JSON"),
        (b'{"type": "buy", "id": "../../etc/passwd"}', 400, "invalid id"),
        (b'{"type": "buy", "id": 42}', 400, "invalid id"),
        (b'{"type": "buy", "id": "a/b"}', 400, "invalid id"),
    ],
)
def test_bad_event_bodies_are_rejected_with_a_message(
    shared_exchange: Server, body: bytes, status: int, message: str
) -> None:
    """Each class of bad body gets its status and a message naming the problem."""
    response = shared_exchange.post("/event", content=body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_a_body_over_128_kib_is_413(shared_exchange: Server) -> None:
    """Bodies over the limit are refused before they are read in full."""
    body = b'{"type": "buy", "pad": "' + b"x" * (128 * 1024) + b'"}'
    response = shared_exchange.post("/event", content=body)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_a_deeply_nested_body_is_rejected_and_the_server_keeps_serving(
    shared_exchange: Server,
) -> None:
    """A body nested 50,000 levels deep is a 400, and the next request still works."""
    body = b'{"type": "buy", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    response = shared_exchange.post("/event", content=body)
    assert response.status_code == 400
    assert "invalid JSON" in response.json()["error"]
    assert shared_exchange.post("/event", {"type": "buy"}).status_code == 202


@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "$aws/things", "a/b/c/d/e/f/g/h/i"])
def test_generic_publish_refuses_invalid_topic_names(shared_exchange: Server, topic: str) -> None:
    """Wildcards, reserved '$' topics and more than 8 levels are not publishable."""
    response = shared_exchange.post(f"/topics/{topic}", {"x": 1})
    assert response.status_code == 400
    assert response.json()["error"]


def test_unknown_paths_and_methods_are_json_errors(shared_exchange: Server) -> None:
    """Routing errors keep the API's JSON error shape."""
    assert shared_exchange.get("/nope").status_code == 404
    assert shared_exchange.get("/nope").json() == {"error": "Not Found"}
    assert shared_exchange.get("/event").status_code == 405


def test_a_batch_over_the_item_limit_is_413(shared_exchange: Server) -> None:
    """Batches say how many events they may carry."""
    response = shared_exchange.post("/events", [{"type": "sell"}] * 1001)
    assert response.status_code == 413
    assert "at most 1000" in response.json()["error"]


def test_nothing_from_rejected_requests_reaches_the_table(exchange: Server) -> None:
    """Only accepted events are stored."""
    exchange.post("/event", content=b'{"type": "a/b"}')
    exchange.post("/event", {"type": "sell", "id": "ok-1"})
    wait_until(exchange.idle, what="pipeline")
    assert [row["id"] for row in exchange.scan("events")] == ["ok-1"]


def test_a_topic_level_from_the_body_may_be_any_word(shared_exchange: Server) -> None:
    """Letters of any script, digits and a few separators make a level."""
    response = shared_exchange.post("/event", {"type": "käufe-2024_Q1"})
    assert response.status_code == 202
    assert response.json()["topic"] == "event/käufe-2024_Q1"


def test_nesting_too_deep_to_store_is_a_400_not_a_500(shared_exchange: Server) -> None:
    """Bodies that decode but nest deeper than the store's 254 levels are refused cleanly."""
    body = b'{"type": "buy", "x": ' + b"[" * 300 + b"]" * 300 + b"}"
    response = shared_exchange.post("/event", content=body)
    assert response.status_code == 400
    assert "at most 254 levels" in response.json()["error"]


def test_each_event_of_a_batch_is_held_to_the_single_event_limit(shared_exchange: Server) -> None:
    """A batch cannot smuggle in an event bigger than POST /event would take."""
    big = {"type": "sell", "pad": "x" * (128 * 1024)}
    response = shared_exchange.post("/events", [{"type": "sell"}, big])
    assert response.status_code == 207
    assert response.json()["results"][1]["status"] == 413


def test_64_bit_integers_are_stored_exactly(exchange: Server) -> None:
    """The widest integers that fit are kept digit for digit."""
    body = {"type": "sell", "id": "wide-1", "big": 18446744073709551615, "low": -(2**63)}
    assert exchange.post("/event", body).status_code == 202
    wait_until(lambda: exchange.scan("events"), what="row")
    (row,) = exchange.scan("events")
    assert (row["big"], row["low"]) == (18446744073709551615, -(2**63))


def test_a_client_id_header_must_be_a_plain_name(shared_exchange: Server) -> None:
    """The client id becomes clientid() in rules: control characters and spaces are refused."""
    bad = shared_exchange.post("/event", {"type": "sell"}, headers={"rulebus-client-id": "a b\tc"})
    assert bad.status_code == 400
    assert "invalid rulebus-client-id header" in bad.json()["error"]
    good = shared_exchange.post("/event", {"type": "sell"}, headers={"rulebus-client-id": "till-7"})
    assert good.status_code == 202


def test_a_bad_ndjson_line_is_reported_by_its_number(shared_exchange: Server) -> None:
    """One broken line of NDJSON rejects that event only."""
    lines = (
        b'{"type":"sell"}\n{broken\n{"type":"sell"}\n'
        b'{"type":"buy","qty":123456789012345678901234567890}\n'
    )
    response = shared_exchange.post(
        "/events", content=lines, headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 207
    results = response.json()["results"]
    assert results[1]["error"].startswith("line 2: invalid JSON")
    # As in a JSON body: an integer orjson would turn into a float is refused.
    assert results[3]["error"].startswith("line 4: integer 1234567890")
    assert "does not fit in 64 bits" in results[3]["error"]
    assert "id" in results[0] and "id" in results[2]


def test_ids_given_by_the_server_are_time_ordered_uuids(shared_exchange: Server) -> None:
    """Server ids are version 7 UUIDs: a later event's id sorts after an earlier one's."""
    ids = []
    for _ in range(3):
        response = shared_exchange.post("/event", {"type": "sell", "price": 1})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
        time.sleep(0.002)
    assert [uuid.UUID(id_).version for id_ in ids] == [7, 7, 7]
    assert ids == sorted(ids)
