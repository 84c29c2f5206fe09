"""The API's contract, ``/openapi.json``, held against the running server it describes.

One ``rulebus up examples/exchange`` serves the module. Its document must be
valid OpenAPI 3.1 and list every route with its auth. schemathesis then sends
what the document allows (and what it does not), and checks every answer
against it: no 5xx, a documented status, content type, headers and body.
It does so as four callers, so that every kind of answer gets checked: a key
with every scope (answers to good and bad input), no key (401), a key with
the ``metrics`` scope only (403), and a key over its rate limit (429). An app
whose routes need a key gets a run without one too.

schemathesis runs as its command, in a child process, with the NDJSON
serializer of ``schemathesis_hooks``. Each run prints one line: its cases,
its seed and the answers it got. ``RULEBUS_SCHEMATHESIS_EXAMPLES`` sets the
examples per operation of the run with every scope (default 30).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis

from rulebus.api.app import SCOPE
from rulebus.api.ingest import _ID, MAX_BATCH_ITEMS
from tests.runtime.helpers import EXCHANGE, ROOT, Server

EXAMPLES = int(os.environ.get("RULEBUS_SCHEMATHESIS_EXAMPLES", "30"))
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)

KEYED_APP = """
name: keyed
api:
  routes:
    - path: /reading
      batch_path: /readings
      topic: sensors/${site}/${kind}
      required: [value]
      id_field: reading_id
"""


def serve(app: Path, data_dir: Path) -> Iterator[Server]:
    server = Server(app, data_dir).start()
    Server.running.remove(server)  # stopped here, after the module, not after a test
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(EXCHANGE, tmp_path_factory.mktemp("exchange") / "data")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("keyed")
    (root / "app").mkdir()
    (root / "app" / "rulebus.yaml").write_text(KEYED_APP)
    yield from serve(root / "app", root / "data")


def fetch_document(server: Server) -> dict[str, Any]:
    answer = httpx.get(server.url + "/openapi.json", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    document: dict[str, Any] = answer.json()
    return document


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each operation of the document, by ``METHOD path``."""
    return {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a JSON document, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def assert_valid_openapi_31(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    # OpenAPI 3.1's own JSON Schema (schemathesis's copy) leaves schema objects
    # unchecked: each is checked against JSON Schema 2020-12, its regex compiled.
    schemathesis.openapi.from_dict(document).validate()
    schemas = [v for k, v in walk(document) if k == "schema"]
    schemas += document["components"]["schemas"].values()
    for schema in schemas:
        jsonschema_rs.meta.validate(schema)
    for key, value in walk(document):
        if key == "pattern" and isinstance(value, str):
            jsonschema_rs.Draft202012Validator({"pattern": value})


def assert_security(operation: dict[str, Any], scopes: tuple[str, ...] | None) -> None:
    """The operation is open (``None``) or needs a key with one of ``scopes``."""
    if scopes is None:
        assert operation["security"] == []
        assert not {"401", "403", "429"} & set(operation["responses"])
        return
    assert operation["security"] == [{"bearerAuth": [scope]} for scope in scopes]
    assert operation["x-rulebus-scope"] == list(scopes)
    assert all(f"`{scope}`" in operation["description"] for scope in scopes)
    assert {"401", "403", "429", "503"} <= set(operation["responses"])
    unauthorized = operation["responses"]["401"]
    assert unauthorized["headers"] == {
        "WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}
    }


def test_document_is_openapi_31_and_describes_every_route(exchange: Server) -> None:
    """/openapi.json is valid OpenAPI 3.1, served as is, and lists the built-in routes
    and the exchange's (open) routes with their auth and bodies."""
    document = fetch_document(exchange)
    assert_valid_openapi_31(document)
    assert fetch_document(exchange) == document
    assert document["info"]["title"] == "rulebus: exchange"
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"

    found = operations(document)
    assert set(found) == {
        "GET /healthz",
        "GET /openapi.json",
        "POST /topics/{topic}",
        "GET /admin/stats",
        "GET /admin/events/{id}/trace",
        "GET /metrics",
        "POST /event",
        "POST /events",
    }
    assert_security(found["GET /admin/events/{id}/trace"], SCOPE["/admin/events/{id}/trace"])
    for name in ("GET /healthz", "GET /openapi.json", "POST /event", "POST /events"):
        assert_security(found[name], None)
    assert_security(found["POST /topics/{topic}"], SCOPE["/topics"])
    assert_security(found["GET /admin/stats"], SCOPE["/admin/stats"])
    assert_security(found["GET /metrics"], SCOPE["/metrics"])

    event = found["POST /event"]["requestBody"]["content"]["application/json"]["schema"]
    assert event["required"] == ["type"]
    assert event["properties"]["id"]["pattern"] == _ID.pattern
    assert {"202", "200", "400", "413", "503"} == set(found["POST /event"]["responses"])
    batch = found["POST /events"]["requestBody"]["content"]
    assert set(batch) == {"application/json", "application/x-ndjson"}
    for media in batch.values():
        assert media["schema"]["maxItems"] == MAX_BATCH_ITEMS
        assert media["schema"]["items"] == event
    assert {"200", "207", "400", "413", "503"} == set(found["POST /events"]["responses"])
    retry_after = {"$ref": "#/components/headers/Retry-After"}
    assert found["GET /admin/stats"]["responses"]["429"]["headers"]["Retry-After"] == retry_after
    assert found["POST /event"]["responses"]["503"]["headers"]["Retry-After"] == retry_after


def test_keyed_routes_need_an_ingest_key(keyed: Server) -> None:
    """An app route without ``auth: none`` needs the ingest scope; its topic's levels
    from the body are required one-word strings, and its id field is named."""
    document = fetch_document(keyed)
    assert_valid_openapi_31(document)
    found = operations(document)
    for name in ("POST /reading", "POST /readings"):
        assert_security(found[name], SCOPE["ingest"])
    event = found["POST /reading"]["requestBody"]["content"]["application/json"]["schema"]
    assert event["required"] == ["value", "site", "kind"]
    assert set(event["properties"]) == {"value", "site", "kind", "reading_id"}
    assert event["properties"]["site"]["pattern"] == "^[A-Za-z0-9_:@=~-]{1,128}$"
    assert event["properties"]["reading_id"]["pattern"] == _ID.pattern


@dataclass
class Run:
    """What one ``schemathesis run`` did: its JSON report and the requests it sent."""

    report: dict[str, Any]
    # (METHOD path template, content type sent, status answered) -> how many
    requests: Counter[tuple[str, str, int]]

    @property
    def answers(self) -> set[tuple[str, int]]:
        return {(operation, status) for operation, _, status in self.requests}

    def line(self, caller: str) -> str:
        counts: Counter[tuple[str, int]] = Counter()
        for (operation, _, status), count in self.requests.items():
            # Methods no route has: schemathesis checks that they are refused, and nothing more.
            if status != 405:
                counts[operation, status] += count
        per_operation: dict[str, list[str]] = {}
        for (operation, status), count in sorted(counts.items()):
            per_operation.setdefault(operation, []).append(f"{status}x{count}")
        answers = "; ".join(f"{op} {' '.join(s)}" for op, s in per_operation.items())
        cases = self.report["test_cases"]["generated"]
        return (
            f"schemathesis, {caller}: {cases} cases, {len(CHECKS)} checks, seed"
            f" {self.report['seed']}; answers: {answers}"
        )


def run_schemathesis(server: Server, out: Path, key: str | None, *options: str) -> Run:
    """``schemathesis run`` against ``server``'s /openapi.json, as the holder of ``key``;
    fails the test on any failure or error it reports."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        # An explicit filter: else schemathesis leaves out the operation serving the document.
        "--include-path-regex",
        "^/",
        "--report",
        "json,har",
        "--report-json-path",
        str(out / "report.json"),
        "--report-har-path",
        str(out / "requests.har"),
        *options,
    ]
    if key is not None:
        command += ["--header", f"Authorization: Bearer {key}"]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
    }
    # In a directory of its own: schemathesis keeps a cache where it runs.
    result = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, timeout=120)
    server_output = "".join(server.output[-100:])
    assert result.returncode == 0, (
        f"schemathesis found failures:\n{result.stdout}\n{result.stderr}\n"
        f"rulebus up said:\n{server_output}"
    )
    report = json.loads((out / "report.json").read_text())
    assert report["failures"] == [] and report["errors"] == [], result.stdout
    assert report["test_cases"]["without_checks"] == 0
    return Run(report, sent(json.loads((out / "requests.har").read_text()), server))


def sent(har: dict[str, Any], server: Server) -> Counter[tuple[str, str, int]]:
    """How often each documented operation was sent each content type and answered
    each status."""
    requests: Counter[tuple[str, str, int]] = Counter()
    for entry in har["log"]["entries"]:
        request = entry["request"]
        path = request["url"].removeprefix(server.url).split("?")[0]
        if path.startswith("/topics/"):
            path = "/topics/{topic}"
        elif path.startswith("/admin/events/"):
            path = "/admin/events/{id}/trace"
        media = next(
            (h["value"] for h in request["headers"] if h["name"].lower() == "content-type"), ""
        )
        requests[f"{request['method']} {path}", media, entry["response"]["status"]] += 1
    return requests


def create_key(server: Server, name: str, *options: str) -> str:
    """A key made by ``rulebus keys create``, which prints it on one line."""
    return server.cli("keys", "create", name, *options, check=True).stdout.strip()


@pytest.mark.parametrize("caller", ["every scope", "no key", "metrics only", "over its rate"])
def test_exchange_answers_as_its_document_says(
    exchange: Server, tmp_path: Path, caller: str
) -> None:
    """Every answer schemathesis gets from the running exchange conforms to the
    document, whoever calls; the answers checked include those each caller is for."""
    if caller == "every scope":
        run = run_schemathesis(exchange, tmp_path, exchange.key, "--max-examples", str(EXAMPLES))
        expected = {
            ("POST /event", 202),
            ("POST /event", 400),
            ("POST /events", 200),
            ("POST /topics/{topic}", 202),
            ("GET /admin/stats", 200),
            ("GET /admin/events/{id}/trace", 404),
            ("GET /metrics", 200),
            ("GET /healthz", 200),
            ("GET /openapi.json", 200),
        }
    elif caller == "no key":
        run = run_schemathesis(exchange, tmp_path, None, "--max-examples", "5")
        expected = {
            ("POST /topics/{topic}", 401),
            ("GET /admin/stats", 401),
            ("GET /admin/events/{id}/trace", 401),
            ("GET /metrics", 401),
        }
    elif caller == "metrics only":
        key = create_key(exchange, "metrics-only", "--scope", "metrics")
        run = run_schemathesis(exchange, tmp_path, key, "--max-examples", "5")
        expected = {
            ("POST /topics/{topic}", 403),
            ("GET /admin/stats", 200),
            ("GET /admin/events/{id}/trace", 403),
            ("GET /metrics", 200),
        }
    else:
        key = create_key(
            exchange, "slow", "--scope", "publish", "--scope", "metrics", "--rate", "1/h"
        )
        run = run_schemathesis(exchange, tmp_path, key, "--max-examples", "5")
        expected = {
            ("POST /topics/{topic}", 429),
            ("GET /admin/stats", 429),
            ("GET /metrics", 429),
        }
    print(run.line(caller))
    assert run.report["operations"]["tested"] == 8
    missing = expected - run.answers
    assert not missing, f"no answer {missing} among {sorted(run.answers)}"
    if caller == "every scope":
        # Batches of both kinds the document describes were sent, and accepted.
        for media in ("application/json", "application/x-ndjson"):
            assert run.requests["POST /events", media, 200] > 0


def test_keyed_app_answers_401_as_its_document_says(keyed: Server, tmp_path: Path) -> None:
    """Without a key, an app's keyed routes answer 401 as documented (with
    ``WWW-Authenticate``), and the open routes answer as usual."""
    run = run_schemathesis(keyed, tmp_path, None, "--max-examples", "5")
    print(run.line("no key, keyed app"))
    assert run.report["operations"]["tested"] == 8
    assert {("POST /reading", 401), ("POST /readings", 401), ("GET /healthz", 200)} <= run.answers
