"""The web console at /console, driven over HTTP against a real ``rulebus up`` of the exchange."""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.runtime.console_exchange import (
    Exchange,
    a_flagged_id,
    letter_of,
    post_event,
    running_exchange,
)
from tests.runtime.helpers import EXCHANGE, Server, make_certificate, make_key, wait_until

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def exchange(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exchange]:
    """The exchange on each set of backends, shared by the tests of this module."""
    with running_exchange(request.param, request, tmp_path_factory.mktemp("console")) as found:
        yield found


def login(server: Server, key: str | None = None) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=30)
    answer = client.post("/console/login", data={"key": key or server.key, "next": "/console"})
    assert answer.status_code == 303, answer.text
    return client


def csrf(client: httpx.Client, page: str = "/console") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(page).text)
    assert found, "the page has no CSRF token"
    return found.group(1)


class TestLogin:
    def test_an_admin_key_gets_a_session_cookie(self, exchange: Exchange) -> None:
        """Logging in with an admin key sets an HttpOnly, SameSite=Strict cookie and opens pages."""
        client = httpx.Client(base_url=exchange.server.url, timeout=30)
        answer = client.post("/console/login", data={"key": exchange.server.key})
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=43200" in cookie
        assert "secure" not in cookie  # plain HTTP here
        page = client.get("/console")
        assert page.status_code == 200 and "Overview" in page.text

    def test_over_tls_the_cookie_is_secure(self, tmp_path: Path) -> None:
        """Served over HTTPS, the session cookie is marked Secure."""
        cert, key, ca = make_certificate(tmp_path)
        tls = ("--tls-cert", str(cert), "--tls-key", str(key))
        server = Server(EXCHANGE, tmp_path / "data", None, *tls)
        server.url = server.url.replace("http://", "https://")
        server.start()
        try:
            trusted = ssl.create_default_context(cafile=str(ca))
            answer = httpx.post(
                server.url + "/console/login", data={"key": server.key}, verify=trusted
            )
            assert answer.status_code == 303
            assert "; secure" in answer.headers["set-cookie"].lower()
        finally:
            server.stop()

    def test_a_key_without_admin_is_refused(self, exchange: Exchange) -> None:
        """A key with other scopes gets the form again with the reason, and no cookie."""
        key = make_key(exchange.server.data_dir, exchange.server.env, scopes=("publish", "metrics"))
        answer = httpx.post(exchange.server.url + "/console/login", data={"key": key})
        assert answer.status_code == 403
        assert "set-cookie" not in answer.headers
        assert "lacks the &#39;admin&#39; scope" in answer.text

    def test_a_wrong_key_is_refused(self, exchange: Exchange) -> None:
        answer = httpx.post(exchange.server.url + "/console/login", data={"key": "rb_nope"})
        assert answer.status_code == 403 and "unknown or revoked API key" in answer.text

    def test_without_a_session_pages_redirect_to_the_login(self, exchange: Exchange) -> None:
        """Every page sends an anonymous visitor (or a forged cookie) to the login form."""
        for page in ("/console", "/console/rules", "/console/dead-letters", "/console/tail/stream"):
            answer = httpx.get(exchange.server.url + page)
            assert answer.status_code == 303, page
            assert answer.headers["location"].startswith("/console/login?next=")
        forged = httpx.get(exchange.server.url + "/console", cookies={"rulebus_console": "abc.def"})
        assert forged.status_code == 303

    def test_a_revoked_key_ends_its_sessions(self, exchange: Exchange) -> None:
        """Within a few seconds of `rulebus keys revoke`, the key's session stops working."""
        server = exchange.server
        key = make_key(server.data_dir, server.env, name="console-revoked", scopes=("admin",))
        client = login(server, key)
        assert client.get("/console/rules").status_code == 200
        server.cli("keys", "revoke", "console-revoked", check=True)
        wait_until(
            lambda: client.get("/console/rules").status_code == 303,
            timeout=10,
            what="the session to end",
        )

    def test_logout_ends_the_session(self, exchange: Exchange) -> None:
        client = login(exchange.server)
        token = csrf(client)
        assert client.post("/console/logout", data={"csrf": token}).status_code == 303
        assert client.get("/console").status_code == 303


class TestPages:
    def test_each_page_renders_with_real_data(self, exchange: Exchange) -> None:
        """After buys, sells and a flagged buy, each page shows them."""
        server = exchange.server
        sell = post_event(server, {"type": "sell", "price": 12.5, "id": "console-sell-1"})
        buy = a_flagged_id("console-buy")
        post_event(server, {"type": "buy", "price": 300, "id": buy})
        letter = wait_until(lambda: letter_of(server, buy), what="the webhook's dead letter")
        client = login(server)

        overview = client.get("/console").text
        assert re.search(r'id="head">\d+<', overview)
        assert client.get("/console?part=numbers").text.lstrip().startswith('<div class="numbers">')

        rules = client.get("/console/rules").text
        for name in ("archive-events", "check-buys", "archive-fraud"):
            assert f'id="rule-{name}"' in rules
        assert "SELECT * FROM &#39;alert/fraud&#39;" in rules
        assert "object fraud-archive" in rules
        archive = rules.split('id="rule-archive-events"')[1].split("</tr>")[0]
        assert re.search(r"rule_matches: [1-9]", archive), archive

        events = client.get("/console/events", params={"topic": "event/+"}).text
        assert sell in events and buy in events
        by_id = client.get("/console/events", params={"id": buy}).text
        assert buy in by_id and sell not in by_id
        trace = client.get(f"/console/events/{buy}")
        assert trace.status_code == 200 and "check-buys" in trace.text

        table = client.get("/console/tables/events").text
        assert sell in table
        bucket = client.get("/console/buckets/fraud-archive").text
        assert f"{buy}.json" in bucket
        obj = client.get("/console/buckets/fraud-archive/object", params={"key": f"{buy}.json"})
        assert obj.status_code == 200 and "300" in obj.text

        dlq = client.get("/console/dead-letters", params={"rule": "archive-fraud"}).text
        assert letter["event_id"] in dlq and "Redrive all" in dlq
        opened = client.get("/console/dead-letters", params={"open": letter["id"]}).text
        assert "answered 400" in opened

    def test_a_table_pages_through_in_key_order(self, exchange: Exchange) -> None:
        """A page holds `limit` rows; the next page link gives the following ones."""
        server = exchange.server
        for n in range(5):
            post_event(server, {"type": "sell", "price": n, "id": f"console-page-{n}"})
        wait_until(lambda: len(server.scan("events")) >= 5, what="rows")
        client = login(server)
        first = client.get("/console/tables/events", params={"limit": 2}).text
        second = client.get("/console/tables/events", params={"limit": 2, "offset": 2}).text
        rows = lambda text: re.findall(r"<td><a href=[^>]*row=\d+\">([^<]+)</a>", text)  # noqa: E731
        assert len(rows(first)) == 2 and len(rows(second)) == 2
        assert not set(rows(first)) & set(rows(second))
        assert "offset=2&limit=2" in first
        everything = [item["id"] for item in server.scan("events")]
        assert rows(first) + rows(second) == everything[:4]

    def test_a_bucket_pages_through_its_keys(self, exchange: Exchange) -> None:
        """Keys come `limit` at a time, in order; the next page starts after the last one."""
        server = exchange.server
        for n in range(3):
            post_event(server, {"type": "buy", "price": 2, "id": a_flagged_id(f"console-obj{n}")})

        def listed() -> list[str]:
            return server.cli("bucket", "ls", "fraud-archive", check=True).stdout.split()

        wait_until(lambda: len(listed()) >= 3, what="three objects")
        client = login(server)
        keys: list[str] = []
        page = "/console/buckets/fraud-archive?limit=1"
        while page:
            text = client.get(page).text
            keys += re.findall(r"object\?key=[^\"]+\">([^<]+)</a>", text)
            found = re.search(r'<a href="([^"]+)">Next page</a>', text)
            page = found.group(1).replace("&amp;", "&") if found else ""
        assert keys == listed()

    def test_events_are_searched_in_a_time_range(self, exchange: Exchange) -> None:
        """From and until take ISO times or ages; an event outside the range is not listed,
        and a time that is neither is a 400 that says what it expects."""
        server = exchange.server
        post_event(server, {"type": "sell", "price": 1, "id": "console-range-1"})
        wait_until(lambda: "console-range-1" in str(server.scan("events")), what="the row")
        client = login(server)

        def listed(**params: str) -> str:
            answer = client.get("/console/events", params={"topic": "event/sell", **params})
            assert answer.status_code == 200, answer.text
            return answer.text

        assert "console-range-1" in listed(since="10m")
        assert "console-range-1" in listed(since="2000-01-01T00:00:00Z", until="2999-01-01T00:00Z")
        assert "console-range-1" not in listed(since="2000-01-01T00:00:00Z", until="1h")
        assert "console-range-1" not in listed(since="2999-01-01T00:00:00Z")
        bad = client.get("/console/events", params={"since": "yesterday"})
        assert bad.status_code == 400 and "expected ISO 8601" in bad.text

    def test_bad_input_is_a_clear_4xx_page(self, exchange: Exchange) -> None:
        """A bad parameter or an unknown name gets an HTML page that says what is wrong."""
        client = login(exchange.server)
        answer = client.get("/console/tables/events", params={"limit": "lots"})
        assert answer.status_code == 400
        assert answer.headers["content-type"].startswith("text/html")
        assert "limit must be a whole number" in answer.text
        assert client.get("/console/tables/nope").status_code == 404
        assert client.get("/console/events", params={"topic": "a/#/b"}).status_code == 400
        missing = client.get("/console/buckets/fraud-archive/object", params={"key": "nope.json"})
        assert missing.status_code == 404

    def test_a_payload_is_shown_escaped(self, exchange: Exchange) -> None:
        """Event payloads are untrusted: a <script> in one is text, not markup."""
        server = exchange.server
        evil = post_event(
            server, {"type": "sell", "id": "console-evil", "note": "<script>alert(1)</script>"}
        )
        wait_until(lambda: any(i["id"] == evil for i in server.scan("events")), what="row")
        client = login(server)
        for page in (
            f"/console/events?id={evil}",
            f"/console/events/{evil}",
            "/console/tables/events",
        ):
            text = client.get(page).text
            assert "<script>alert" not in text, page
            assert "&lt;script&gt;alert(1)" in text, page

    def test_no_page_loads_anything_from_elsewhere(self, exchange: Exchange) -> None:
        """Scripts and styles come from the package: no URL with a host in any page or asset."""
        client = login(exchange.server)
        pages = ["/console", "/console/rules", "/console/sql", "/console/events", "/console/tables"]
        pages += ["/console/dead-letters", "/console/tail", "/console/architecture"]
        pages += ["/console/login"]
        pages += ["/console/static/console.js", "/console/static/console.css"]
        for page in pages:
            answer = client.get(page)
            assert answer.status_code == 200, page
            if page.startswith("/console/static/"):  # JS and CSS: no URL with a host at all
                assert not re.search(r"(https?:)?//[a-z0-9]", answer.text, re.I), page
                continue
            attributes = r'(?:src|href|action|data-refresh|data-stream|data-events)="([^"]*)"'
            links = re.findall(attributes, answer.text)
            assert links and all(link.startswith("/console") for link in links), (page, links)
        # The assets are public: the login page needs its style before any session.
        assert httpx.get(exchange.server.url + "/console/static/console.css").status_code == 200


class TestSqlTester:
    def test_output_and_no_match(self, exchange: Exchange) -> None:
        client = login(exchange.server)
        token = csrf(client, "/console/sql")
        form = {
            "csrf": token,
            "sql": "SELECT price * 2 AS p FROM 'event/+' WHERE price > 100",
            "topic": "event/buy",
            "payload": '{"price": 150}',
        }
        output = client.post("/console/sql", data=form).text
        assert re.search(r'<pre id="output">\{\s*&#34;p&#34;: 300\s*\}</pre>', output)
        cheap = client.post("/console/sql", data={**form, "payload": '{"price": 5}'}).text
        assert 'id="no-match"' in cheap and "WHERE is not true" in cheap
        elsewhere = client.post("/console/sql", data={**form, "topic": "alert/fraud"}).text
        assert 'id="no-match"' in elsewhere
        broken = client.post("/console/sql", data={**form, "payload": "{"}).text
        assert "not valid JSON" in broken

    def test_prefilled_from_a_rule_and_from_an_event(self, exchange: Exchange) -> None:
        server = exchange.server
        event = post_event(server, {"type": "sell", "price": 42, "id": "console-prefill"})
        client = login(server)
        from_rule = client.get("/console/sql", params={"rule": "check-buys"}).text
        assert "SELECT * FROM &#39;event/buy&#39;</textarea>" in from_rule
        from_event = client.get("/console/sql", params={"event": event}).text
        assert 'value="event/sell"' in from_event and "&#34;price&#34;: 42" in from_event

    def test_a_post_without_the_csrf_token_is_refused(self, exchange: Exchange) -> None:
        client = login(exchange.server)
        form = {"sql": "SELECT * FROM '#'", "topic": "a", "payload": "{}"}
        for path in ("/console/sql", "/console/sql/send"):
            assert client.post(path, data=form).status_code == 403
            assert client.post(path, data={**form, "csrf": "guess"}).status_code == 403

    def test_send_publishes_the_payload_to_the_topic(self, exchange: Exchange) -> None:
        """Send stores the event before answering, as the console's key, and links its trace."""
        server = exchange.server
        client = login(server)
        form = {
            "csrf": csrf(client, "/console/sql"),
            "sql": "SELECT price FROM 'event/+'",
            "topic": "event/sell",
            "payload": '{"type": "sell", "price": 61, "note": "from the tester"}',
        }
        answer = client.post("/console/sql/send", data=form)
        assert answer.status_code == 303
        sent = re.fullmatch(r"/console/sql\?sent=([^&]+)&.*", answer.headers["location"])
        assert sent, answer.headers["location"]
        event_id = sent.group(1)
        # Stored before the answer: the trace has it at once.
        stored = server.get(f"/admin/events/{event_id}/trace").json()["event"]
        assert stored["topic"] == "event/sell" and stored["payload"]["note"] == "from the tester"
        assert stored["client_id"] == "console" and stored["principal"].startswith("tests-")
        page = client.get(answer.headers["location"]).text
        assert f'Sent as event <a href="/console/events/{event_id}">{event_id}</a>' in page
        assert "SELECT price FROM &#39;event/+&#39;</textarea>" in page
        assert re.search(r'<pre id="output">\{\s*&#34;price&#34;: 61\s*\}</pre>', page)

    def test_send_refuses_what_post_topics_refuses(self, exchange: Exchange) -> None:
        """An invalid topic or a payload that is not a JSON object is the page's error."""
        client = login(exchange.server)
        form = {"csrf": csrf(client, "/console/sql"), "sql": "", "topic": "event/sell"}
        for topic, payload, reason in [
            ("event/+", "{}", "wildcard"),
            ("event/sell", "[1, 2]", "expected a JSON object, got an array"),
            ("event/sell", "{", "invalid JSON"),
        ]:
            answer = client.post(
                "/console/sql/send", data={**form, "topic": topic, "payload": payload}
            )
            assert answer.status_code == 400, answer.text
            error = re.search(r'<p class="error">([^<]*)</p>', answer.text)
            assert error and reason in error.group(1), (topic, payload, answer.text)
            assert f'value="{topic}"' in answer.text  # the form is kept


class TestDeadLetters:
    def test_redrive_one_delivers_it(self, exchange: Exchange) -> None:
        """A redriven dead letter leaves the list and its webhook arrives at the receiver."""
        server, receiver = exchange.server, exchange.receiver
        buy = a_flagged_id("console-redrive")
        post_event(server, {"type": "buy", "price": 9, "id": buy})
        letter = wait_until(
            lambda: letter_of(server, buy),
            what="the dead letter",
        )
        client = login(server)
        token = csrf(client, "/console/dead-letters")
        refused = client.post("/console/dead-letters/redrive", data={"id": str(letter["id"])})
        assert refused.status_code == 403
        receiver.status = None
        try:
            answer = client.post(
                "/console/dead-letters/redrive", data={"id": str(letter["id"]), "csrf": token}
            )
            assert answer.status_code == 303
            assert "redriven%3A%201" in answer.headers["location"]
            wait_until(
                lambda: any(buy.encode() in r.body for r in receiver.received),
                what="the webhook",
            )
            assert all(d["id"] != letter["id"] for d in server.dead_letters())
        finally:
            receiver.status = 400

    def test_redrive_all(self, exchange: Exchange) -> None:
        server, receiver = exchange.server, exchange.receiver
        for n in range(2):
            post_event(server, {"type": "buy", "price": 1, "id": a_flagged_id(f"console-all{n}")})
        wait_until(lambda: len(server.dead_letters()) >= 2, what="dead letters")
        client = login(server)
        token = csrf(client, "/console/dead-letters")
        receiver.status = None
        try:
            answer = client.post(
                "/console/dead-letters/redrive", data={"all": "true", "csrf": token}
            )
            assert answer.status_code == 303
            wait_until(lambda: not server.dead_letters(), what="no dead letters left")
        finally:
            receiver.status = 400

    def test_purge_one_asks_first_then_it_is_gone(self, exchange: Exchange) -> None:
        """Purge shows a confirmation (behind CSRF), and only the confirmed post purges;
        the letter's id is then unknown, which is a 404 with the reason."""
        server = exchange.server
        buy = a_flagged_id("console-purge")
        post_event(server, {"type": "buy", "price": 9, "id": buy})
        letter = wait_until(lambda: letter_of(server, buy), what="the dead letter")
        client = login(server)
        token = csrf(client, "/console/dead-letters")
        page = client.get("/console/dead-letters").text
        assert f'name="id" value="{letter["id"]}">\n        <button class="quiet">Purge' in page
        form = {"id": str(letter["id"])}
        assert client.post("/console/dead-letters/purge", data=form).status_code == 403
        asked = client.post("/console/dead-letters/purge", data={**form, "csrf": token})
        assert asked.status_code == 200
        assert f"Purge dead letter {letter['id']} for good?" in asked.text
        assert letter_of(server, buy) is not None, "asking purges nothing"
        confirmed = {**form, "csrf": token, "confirmed": "true"}
        answer = client.post("/console/dead-letters/purge", data=confirmed)
        assert answer.status_code == 303
        assert "purged%3A%201" in answer.headers["location"]
        assert letter_of(server, buy) is None
        again = client.post("/console/dead-letters/purge", data=confirmed)
        assert again.status_code == 404
        assert f"no dead letter with id {letter['id']}" in again.text

    def test_purge_all_and_redrive_all_take_what_the_filter_chooses(
        self, exchange: Exchange
    ) -> None:
        """Filtered by event id, the page lists that event's letter alone, and Purge all
        and Redrive all act on it alone, back to the filtered page."""
        server, receiver = exchange.server, exchange.receiver
        orders = [a_flagged_id(f"console-filter{n}") for n in range(3)]
        for order in orders:
            post_event(server, {"type": "buy", "price": 2, "id": order})
        letters = [wait_until(lambda o=o: letter_of(server, o), what="letter") for o in orders]
        events = [letter["event_id"] for letter in letters]  # the alerts the orders caused
        client = login(server)
        token = csrf(client, "/console/dead-letters")
        page = client.get("/console/dead-letters", params={"event": events[0]}).text
        assert "1 dead letters match" in page and f'value="{events[0]}"' in page
        assert page.count('class="quiet">Purge') == 1
        chosen = {"csrf": token, "all": "true", "event": events[0]}
        asked = client.post("/console/dead-letters/purge", data=chosen)
        assert "Purge 1 dead letters (those that match the filter now) for good?" in asked.text
        answer = client.post("/console/dead-letters/purge", data={**chosen, "confirmed": "true"})
        assert answer.status_code == 303
        assert f"event={events[0]}" in answer.headers["location"]
        assert [letter_of(server, o) is None for o in orders] == [True, False, False]
        receiver.status = None
        try:
            redrive = {**chosen, "event": events[1]}
            answer = client.post("/console/dead-letters/redrive", data=redrive)
            assert "redriven%3A%201" in answer.headers["location"]
            assert [letter_of(server, o) is None for o in orders] == [True, True, False]
        finally:
            receiver.status = 400
        bad = client.get("/console/dead-letters", params={"topic": "a/#/b"})
        assert bad.status_code == 400


class TestRules:
    def test_disable_and_enable_a_rule(self, exchange: Exchange) -> None:
        """The button edits the app file and reloads: a disabled rule no longer archives."""
        server = exchange.server
        client = login(server)
        token = csrf(client, "/console/rules")
        assert (
            client.post(
                "/console/rules/archive-events/enabled", data={"enabled": "false"}
            ).status_code
            == 403
        )
        answer = client.post(
            "/console/rules/archive-events/enabled", data={"enabled": "false", "csrf": token}
        )
        assert answer.status_code == 303
        try:
            assert "enabled: false" in (exchange.app / "rulebus.yaml").read_text()
            wait_until(
                lambda: (
                    "disabled"
                    in client.get("/console/rules").text.split('id="rule-archive-events"')[1][:300]
                ),
                timeout=10,
                what="the rule shown disabled",
            )
        finally:
            client.post(
                "/console/rules/archive-events/enabled", data={"enabled": "true", "csrf": token}
            )
        assert "enabled: true" in (exchange.app / "rulebus.yaml").read_text()
        assert (
            client.post(
                "/console/rules/nope/enabled", data={"enabled": "true", "csrf": token}
            ).status_code
            == 404
        )


class TestArchitecture:
    def test_the_app_is_drawn_inline_with_its_mermaid(self, exchange: Exchange) -> None:
        """The page holds the SVG of ``rulebus graph`` in the HTML and its Mermaid, escaped."""
        client = login(exchange.server)
        page = client.get("/console/architecture")
        assert page.status_code == 200
        assert '<a href="/console/architecture">Architecture</a>' in page.text
        drawing = re.search(r"<svg .*?</svg>", page.text, re.S)
        assert drawing, "no SVG in the page"
        labels = {t.text for t in ET.fromstring(drawing.group(0)).iter(f"{SVG}text")}
        assert {"POST /event, /events", "event/${type}", "archive-fraud", "events"} <= labels
        mermaid = re.search(r"<details>.*?<pre>(.*?)</pre>", page.text, re.S)
        assert mermaid and mermaid.group(1).startswith("flowchart LR\n")
        assert "fraud-check&#34;]]" in mermaid.group(1) and "<br/>" not in mermaid.group(1)


class TestTail:
    def test_the_tail_streams_an_event_posted_after_it_opened(self, exchange: Exchange) -> None:
        server = exchange.server
        client = login(server)
        seen: list[dict[str, object]] = []
        opened = threading.Event()
        # Posted just before: not new to the tail, though its clock window covers it.
        post_event(server, {"type": "sell", "price": 76, "id": "console-tail-before"})

        def read() -> None:
            with client.stream("GET", "/console/tail/stream", params={"topic": "event/sell"}) as s:
                assert s.headers["content-type"].startswith("text/event-stream")
                for line in s.iter_lines():
                    opened.set()
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert opened.wait(10)
        time.sleep(0.5)
        post_event(server, {"type": "buy", "price": 1, "id": "console-tail-buy"})
        event = post_event(server, {"type": "sell", "price": 77, "id": "console-tail-sell"})
        reader.join(15)
        assert [e["id"] for e in seen] == [event]
        assert seen[0]["payload"] == {"type": "sell", "price": 77, "id": event}
