"""API keys: who may ingest, publish and administer, through the CLI and HTTP."""

from __future__ import annotations

import json
import ssl
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.runtime.helpers import Server, make_certificate, make_key, wait_until

APP = """
name: keyed
tables:
  seen:
    key: [id]
rules:
  record:
    sql: SELECT *, principal() AS who, clientid() AS client FROM 'in/#'
    actions:
      - table: {name: seen}
  record-published:
    sql: SELECT *, principal() AS who FROM 'pub/#'
    actions:
      - table: {name: seen}
api:
  routes:
    - path: /in
      topic: in/${kind}
      required: [kind]
    - path: /open
      topic: in/open
      auth: none
"""


@pytest.fixture
def keyed(tmp_path: Path, backends: dict[str, str]) -> Iterator[Server]:
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(APP))
    server = Server(app, tmp_path / "data", backends).start()
    yield server
    server.stop()


def create(server: Server, name: str, *args: str) -> str:
    result = server.cli("keys", "create", name, *args, check=True)
    (key,) = result.stdout.splitlines()  # the key, alone on one line
    return key


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_a_key_is_printed_once_and_listed_without_it(keyed: Server) -> None:
    key = create(keyed, "feeder", "--scope", "ingest", "--scope", "publish", "--topics", "pub/#")
    assert key.startswith("rbk_") and len(key) == 59
    listing = keyed.cli("keys", "ls", check=True).stdout
    assert key not in listing
    (row,) = [line for line in listing.splitlines() if line.startswith("feeder ")]
    assert "ingest,publish" in row and "pub/#" in row and "never" in row
    (record,) = [
        json.loads(line)
        for line in keyed.cli("keys", "ls", "--json", check=True).stdout.splitlines()
        if json.loads(line)["name"] == "feeder"
    ]
    assert record["scopes"] == ["ingest", "publish"]
    assert record["topics"] == ["pub/#"]
    assert key not in json.dumps(record)
    # What is stored is a hash: the key appears nowhere in the data directory.
    for path in keyed.data_dir.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_requests_without_a_valid_key_get_401(keyed: Server) -> None:
    body = {"kind": "a", "id": "x"}
    for headers in ({}, {"authorization": "Basic abc"}, {"authorization": "Bearer"}):
        answer = keyed.post("/in", body, headers=headers, key="")
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in answer.json()["error"]
    forged = "rbk_" + "0" * 12 + "A" * 43
    for key in (forged, "not-a-key", keyed.key + "x", keyed.key[:-1] + "B"):
        answer = keyed.post("/in", body, key=key)
        assert answer.status_code == 401
        assert answer.json() == {"error": "unknown or revoked API key"}
    assert keyed.get("/admin/stats", key="").status_code == 401
    assert keyed.post("/topics/pub/a", {"id": "p"}, key="").status_code == 401


def test_a_key_without_the_scope_or_topic_gets_403_naming_what_is_missing(
    keyed: Server,
) -> None:
    monitor = create(keyed, "monitor", "--scope", "metrics")
    feeder = create(keyed, "feeder", "--scope", "publish", "--topics", "pub/ok/#")

    answer = keyed.post("/in", {"kind": "a", "id": "m-1"}, key=monitor)
    assert answer.status_code == 403
    assert answer.json()["error"] == (
        "key 'monitor' lacks the 'ingest' scope needed to POST /in (it has: metrics)"
    )
    answer = keyed.post("/topics/pub/ok", {"id": "m-2"}, key=monitor)
    assert answer.status_code == 403 and "'publish' scope" in answer.json()["error"]

    assert keyed.post("/topics/pub/ok/deep", {"id": "f-1"}, key=feeder).status_code == 202
    assert keyed.post("/topics/pub/ok", {"id": "f-2"}, key=feeder).status_code == 202
    answer = keyed.post("/topics/pub/other", {"id": "f-3"}, key=feeder)
    assert answer.status_code == 403
    assert answer.json()["error"] == (
        "key 'feeder' may not publish to 'pub/other': its topic filters are pub/ok/#"
    )
    # Monitoring may read the stats; publishing may not.
    assert keyed.get("/admin/stats", key=monitor).status_code == 200
    answer = keyed.get("/admin/stats", key=feeder)
    assert answer.status_code == 403
    assert "'admin' or 'metrics' scope" in answer.json()["error"]


def test_principal_is_the_name_of_the_key_and_open_routes_need_none(keyed: Server) -> None:
    feeder = create(keyed, "feeder", "--scope", "ingest", "--scope", "publish")
    assert keyed.post("/in", {"kind": "k", "id": "i-1"}, key=feeder).status_code == 202
    assert keyed.post("/topics/pub/x", {"id": "i-2"}, key=feeder).status_code == 202
    assert keyed.post("/open", {"id": "i-3"}, key="").status_code == 202
    rows = wait_until(lambda: len(keyed.scan("seen")) == 3 and keyed.scan("seen"), what="rows")
    who = {row["id"]: row.get("who") for row in rows}
    assert who == {"i-1": "feeder", "i-2": "feeder", "i-3": None}
    # clientid() keeps its meaning: the client, not the key.
    assert {row["id"]: row["client"] for row in rows if "client" in row}["i-1"].startswith(
        "http:127.0.0.1"
    )


def test_a_revoked_key_stops_working_on_the_running_server(keyed: Server) -> None:
    key = create(keyed, "temp", "--scope", "ingest")
    assert keyed.post("/in", {"kind": "a", "id": "r-1"}, key=key).status_code == 202
    assert keyed.cli("keys", "revoke", "temp", check=True).stdout == "revoked: temp\n"
    wait_until(
        lambda: keyed.post("/in", {"kind": "a", "id": "r-2"}, key=key).status_code == 401,
        timeout=5,
        what="the revoked key refused",
    )
    again = keyed.cli("keys", "revoke", "temp")
    assert again.returncode == 1
    assert again.stderr == "error: no key named 'temp'\n"


def test_a_key_over_its_rate_gets_429_with_retry_after(keyed: Server) -> None:
    # Slow enough that a loaded machine's slow answers do not refill it between posts.
    key = create(keyed, "slow", "--scope", "ingest", "--rate", "12/m", "--burst", "3")
    wait_until(
        lambda: keyed.post("/in", {"kind": "a"}, key=key).status_code == 202,
        timeout=5,
        what="the new key accepted",
    )
    statuses = [keyed.post("/in", {"kind": "a"}, key=key).status_code for _ in range(6)]
    assert 429 in statuses
    answer = keyed.post("/in", {"kind": "a"}, key=key)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "5"
    assert "over its rate limit of 0.2/s (burst 3)" in answer.json()["error"]
    # Other keys are not held back, and the bucket refills.
    assert keyed.post("/in", {"kind": "a"}).status_code == 202
    time.sleep(5.1)
    assert keyed.post("/in", {"kind": "a"}, key=key).status_code == 202


def test_last_use_is_recorded(keyed: Server) -> None:
    key = create(keyed, "user", "--scope", "metrics")
    wait_until(lambda: keyed.get("/admin/stats", key=key).status_code == 200, timeout=5)
    keyed.stop()  # the API writes last-use times every few seconds, and when it stops
    (record,) = [
        json.loads(line)
        for line in keyed.cli("keys", "ls", "--json", check=True).stdout.splitlines()
        if json.loads(line)["name"] == "user"
    ]
    assert record["last_used"] is not None and record["last_used"] >= record["created"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--scope", "root"], "Invalid value for '--scope'"),
        (["x y", "--scope", "admin"], "invalid key name 'x y'"),
        (["x", "--scope", "publish", "--topics", "a/#/b"], "invalid topic filter 'a/#/b'"),
        (["x", "--scope", "ingest", "--rate", "fast"], "invalid rate 'fast'"),
        (["x", "--scope", "ingest", "--burst", "5"], "--burst needs --rate"),
        (["x"], "Missing option '--scope'"),
    ],
)
def test_bad_key_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    from tests.runtime.helpers import cli

    result = cli("keys", "create", *args, data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr
    assert result.stdout == ""


def test_a_name_is_one_key(tmp_path: Path) -> None:
    make_key(tmp_path / "data", name="dup", scopes=("admin",))
    from tests.runtime.helpers import cli

    result = cli("keys", "create", "dup", "--scope", "admin", data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert result.stderr == "error: a key named 'dup' exists already\n"


def test_the_api_serves_https_with_the_given_certificate(tmp_path: Path) -> None:
    cert, key, ca = make_certificate(tmp_path)
    app = tmp_path / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(textwrap.dedent(APP))
    server = Server(app, tmp_path / "data", None, "--tls-cert", str(cert), "--tls-key", str(key))
    server.url = server.url.replace("http://", "https://")
    server.start()
    try:
        trusted = ssl.create_default_context(cafile=str(ca))
        listening = f"listening on https://127.0.0.1:{server.port}"
        assert any(listening in line for line in server.output)
        answer = httpx.get(server.url + "/healthz", verify=trusted)
        assert answer.json()["status"] == "ok"
        posted = httpx.post(
            server.url + "/in",
            json={"kind": "t", "id": "tls-1"},
            headers=bearer(server.key),
            verify=trusted,
        )
        assert posted.status_code == 202
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/healthz")  # not trusted without the CA
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(server.url.replace("https://", "http://") + "/healthz")
    finally:
        server.stop()


def test_tls_options_are_checked_before_listening(tmp_path: Path) -> None:
    from tests.runtime.helpers import EXCHANGE, cli

    cert, key, _ = make_certificate(tmp_path)
    half = cli("up", str(EXCHANGE), "--tls-cert", str(cert), data_dir=tmp_path / "d")
    assert half.returncode == 2 and "--tls-cert and --tls-key go together" in half.stderr
    swapped = cli(
        "up",
        str(EXCHANGE),
        "--tls-cert",
        str(key),
        "--tls-key",
        str(cert),
        "--port",
        "0",
        data_dir=tmp_path / "d",
    )
    assert swapped.returncode == 1
    assert swapped.stderr.startswith("error: cannot use --tls-cert")
    assert len(swapped.stderr.splitlines()) == 1
