"""Fuzzing what becomes topics, ids, object keys and webhook headers, on one real server.

One ``rulebus up`` serves the whole module (starting one takes seconds), with
an app made for this: a keyed route whose topic level comes from the body, a
rule that republishes to a topic rendered from the payload, one that archives
to object keys rendered from the payload, and one that sends every event to
a signed webhook on a local receiver. Hypothesis generates the inputs; the
checks are the promises of docs/security.md ("Topics are data") and
docs/app-file.md, written here independently of the code that keeps them.

Requests go over raw sockets, not an HTTP client: clients normalise paths
(``../``), refuse control bytes and encode headers, and the point is to send
what a hostile client would.

``RULEBUS_FUZZ_SCALE=5`` multiplies every property's number of examples.
The module prints one line with the number of inputs each property tried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulebus.sql import validate_topic
from tests.runtime.helpers import Receiver, Server, wait_until

SCALE = float(os.environ.get("RULEBUS_FUZZ_SCALE", "1"))
SECRET = "whsec_Zm96ei1zZWNyZXQtb2YtdGhpcy1tb2R1bGUtb25seQ=="

APP = """
name: fuzz
tables:
  republished:
    key: [src]
buckets: [fuzz-archive]
# The receiver listens on loopback, which webhooks may reach only when allowed.
egress: {allow: [127.0.0.0/8]}
notifications:
  hooks:
    subscribers:
      - webhook:
          url_env: FUZZ_WEBHOOK_URL
          secret: SECRET
          timeout: 5s
# Failures are final quickly: the module waits for every delivery to settle.
retry: {attempts: 2, backoff: 50ms, max_backoff: 100ms}
rules:
  # Only the events of the republish/object property carry sub and name; the
  # others would all end in dead letters and hide the ones that matter.
  forward:
    sql: SELECT *, id AS src FROM 'in/#' WHERE NOT isUndefined(sub)
    actions:
      - republish: {topic: "out/${sub}"}
    error_action: {log: {level: error}}
  seen:
    sql: SELECT src, topic() AS topic FROM 'out/#'
    actions:
      - table: {name: republished}
    error_action: {log: {level: error}}
  archive:
    sql: SELECT * FROM 'in/#' WHERE NOT isUndefined(name)
    actions:
      - object: {bucket: fuzz-archive, key: "${name}.json"}
      # A key that ends with the value itself: a trailing character is not
      # hidden behind a constant suffix.
      - object: {bucket: fuzz-archive, key: "raw/${name}"}
    error_action: {log: {level: error}}
  # Every event, whatever its topic, reaches the webhook: its topic and id
  # become headers.
  hook:
    sql: SELECT * FROM '#'
    actions:
      - notify: {topic: hooks}
    error_action: {log: {level: error}}
api:
  routes:
    - path: /event
      batch_path: /events
      topic: in/${kind}
      required: [kind]
""".replace("SECRET", SECRET)


def budget(examples: int) -> Any:
    """Hypothesis settings for ``examples`` examples (times RULEBUS_FUZZ_SCALE)."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,  # a request may wait for a commit's fsync
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- What the docs promise, written independently of src/ ------------------

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SEGMENT = re.compile(r"[A-Za-z0-9!_.*'()=@,:+-]+")
_CLIENT_ID = re.compile(r"[\w.:@=~/+-]{1,128}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LEVEL_PUNCTUATION = set("_-:@=~")


def topic_ok(topic: str) -> bool:
    """docs/security.md: no control character, no bytes that were not UTF-8, no
    wildcard, no leading '$', no empty level, at most 8 levels and 256 bytes."""
    levels = topic.split("/")
    return (
        0 < len(topic.encode("utf-8", "surrogatepass")) <= 256
        and not _CONTROL.search(topic)
        and len(levels) <= 8
        and "" not in levels
        and "+" not in topic
        and "#" not in topic
        and not topic.startswith("$")
    )


def level_ok(level: str) -> bool:
    """docs/app-file.md: a level from the body is 1-128 letters or digits of any
    script, '_', '-', ':', '@', '=' or '~'."""
    return 0 < len(level) <= 128 and all(c.isalnum() or c in _LEVEL_PUNCTUATION for c in level)


def id_ok(value: Any) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def key_ok(key: str) -> bool:
    """docs/app-file.md: '/'-separated segments of letters, digits and !_.*'()=@,:+-,
    none empty or starting with '.'; at most 1024 bytes."""
    return 0 < len(key.encode("utf-8", "surrogatepass")) <= 1024 and all(
        _SEGMENT.fullmatch(s) and not s.startswith(".") for s in key.split("/")
    )


def rendered(value: Any) -> str | None:
    """What a ``${}`` template makes of a JSON value, where that is plain to say
    (None for numbers and structures, whose text only the SQL types decide)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int) and abs(value) < 10**15:
        return str(value)
    return None


def not_http(value: bytes) -> bool:
    """Whether a header value holds bytes that HTTP forbids there (controls but tab)."""
    return any((b < 32 and b != 9) or b == 127 for b in value)


def signature_ok(headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks, from the spec."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return f"v1,{expected}" in headers["webhook-signature"].split()


# -- Inputs ----------------------------------------------------------------

# Pieces that have broken topic, path, key and header handling somewhere.
NASTY = [
    "\r\n", "\n", "\r", "\x00", "\t", "\x0b", "\x1b", "\x7f", "\x85", "\x9f", "\u2028",
    "\u200b", "\ufeff", "\ufffd", "../", "..", ".", "/", "//", "\\", "+", "#", "$", "$SYS",
    "%", "%2e%2e", "%2F", "%00", "%0D%0A", "%41", " ", "?", "&", ";", "'", '"', "{}",
    "[]", "é", "e\u0301", "€", "日本", "😀", "ﬁ", "Ⅻ", "²", ":", "@", "=", "~", "-", "_",
    "CON", "null", "x" * 129,
]  # fmt: skip
WORD = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
FRAGMENT = st.one_of(st.sampled_from(NASTY), st.text(max_size=10), WORD)
NASTY_TEXT = st.lists(FRAGMENT, min_size=1, max_size=6).map("".join)
TOPIC_TEXT = st.one_of(
    st.text(max_size=40),  # any code point but surrogates: controls, C1, unicode
    NASTY_TEXT,
    st.lists(NASTY_TEXT, min_size=1, max_size=10).map("/".join),  # many levels
    st.integers(1, 20).map(lambda n: "/".join(["lv"] * n)),
    st.text(min_size=100, max_size=300),  # very long
    # The limits themselves: 8 levels, 256 bytes, in 1- and 2-byte characters.
    st.sampled_from(["x" * 256, "x" * 257, "é" * 128, "é" * 129, "a/" * 7 + "a", "a/" * 8 + "a"]),
)
# What may stay unencoded in a path: '?', '#' and '%' never (they would end
# or change the path), the rest sometimes, as clients differ.
SAFE = st.sampled_from(["/", "", "/+$!*'(),;=:@&~", "+$"])
# Bytes that are not UTF-8: a lone continuation byte, an encoded surrogate,
# overlong forms of '/' and NUL, a code point past U+10FFFF, a cut sequence.
NOT_UTF8 = [
    b"\xff",
    b"\x80",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xc0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
]
# Integers within 64 bits: wider ones are refused whole (documented), which
# would hide what the other values do.
INT64 = st.integers(-(2**63), 2**63 - 1)
# A word and one piece after it: a value that is valid but for its end, where
# a '$' in a pattern lets a line break through.
ENDINGS = ["\n", "\r\n", "\r", "\x00", " ", "/", "/..", "/.x", "\u2028", "\x85", "%0A", "."]
SUFFIXED = st.tuples(WORD, st.sampled_from(ENDINGS)).map("".join)
VALUES = st.one_of(
    NASTY_TEXT,
    SUFFIXED,
    st.text(max_size=30),
    WORD,
    INT64,
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(INT64, max_size=3),
    st.dictionaries(WORD, INT64, max_size=2),
)
IDS = st.one_of(
    st.from_regex(_ID.pattern, fullmatch=True),  # valid
    # '$' in a pattern also matches before a trailing newline: Hypothesis makes those.
    st.from_regex(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,20}$"),
    SUFFIXED,
    NASTY_TEXT,
    st.text(max_size=20),
    INT64,
    st.none(),
    st.just("x" * 129),
)


@st.composite
def topic_targets(draw: st.DrawFn) -> tuple[bytes, str | None, bool]:
    """A request target for POST /topics/..., the topic it must decode to (None:
    not UTF-8), and whether it holds bytes an HTTP parser may refuse."""
    how = draw(st.sampled_from(["text", "text", "text", "bytes", "raw", "prefix"]))
    if how == "raw":
        # Bytes as they come: spaces, controls, non-ASCII, '?', '#'.
        return b"/topics/" + draw(st.binary(min_size=1, max_size=40)), None, True
    if how == "bytes":
        text = draw(TOPIC_TEXT).encode()
        at = draw(st.integers(0, len(text)))
        raw = text[:at] + draw(st.sampled_from(NOT_UTF8)) + text[at:]
        try:
            expected = raw.decode("utf-8")
        except UnicodeDecodeError:
            expected = None
        return b"/topics/" + quote_from_bytes(raw, safe="/").encode(), expected, False
    topic = draw(TOPIC_TEXT)
    prefix = "/topics/"
    if how == "prefix":
        # RFC 3986: '%74' and 't' are the same path; the topic must not change.
        prefix = "".join(
            f"%{ord(c):02X}" if c.isalpha() and draw(st.booleans()) else c for c in prefix
        )
    return (prefix + quote(topic, safe=draw(SAFE))).encode(), topic, False


@st.composite
def authorizations(draw: st.DrawFn, key: str) -> bytes:
    """An Authorization header value that is not the server's key."""
    looks_valid = st.from_regex(r"rbk_[0-9a-f]{12}[A-Za-z0-9_-]{43}", fullmatch=True)
    mutated = st.tuples(st.integers(0, len(key) - 1), st.characters(codec="latin-1")).map(
        lambda m: key[: m[0]] + m[1] + key[m[0] + 1 :]
    )
    token = draw(
        st.one_of(
            looks_valid,
            mutated,
            st.integers(1, len(key) - 1).map(lambda n: key[:n]),  # cut short
            st.just(key.upper()),
            st.just(key + "x"),
            st.just(key.replace("rbk_", "RBK_")),
            st.text(max_size=60),
        )
    ).encode("utf-8")
    if token.strip() == key.encode():  # a mutation that changed nothing
        token += b"!"
    scheme = draw(st.sampled_from([b"Bearer ", b"bearer ", b"Basic ", b"Bearer", b"", b"Token "]))
    return draw(
        st.one_of(
            st.just(scheme + token),
            st.binary(max_size=80),  # garbage, non-ASCII bytes, controls
            st.sampled_from([8_000, 70_000, 200_000]).map(lambda n: b"Bearer " + b"A" * n),
            st.binary(min_size=1, max_size=10).map(lambda b: b"Bearer " + key.encode()[:20] + b),
        )
    )


# -- The server and talking to it --------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Fuzz:
    server: Server
    receiver: Receiver
    root: Path  # holds app/ and data/, and must hold nothing else
    tally: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Every event the server accepted: id -> (topic, payload).
    accepted: dict[str, tuple[str, Any]] = field(default_factory=dict)

    def send(
        self,
        target: bytes,
        body: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        method: bytes = b"POST",
        key: str | None = None,
        content_type: bytes = b"application/json",
    ) -> Answer:
        """One request, exactly these bytes, on a connection of its own."""
        key = self.server.key if key is None else key
        head = [
            method + b" " + target + b" HTTP/1.1",
            b"host: 127.0.0.1",
            b"connection: close",
            b"content-type: " + content_type,
            b"content-length: %d" % len(body),
        ]
        if key:
            head.append(b"authorization: Bearer " + key.encode())
        head += [name + b": " + value for name, value in headers or []]
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=30) as sock:
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            return Answer(
                answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
            )

    def judge(self, answer: Answer, malformed: bool = False) -> Any:
        """The answer's JSON, after the checks every answer must pass; None when
        uvicorn's parser refused bytes that are not HTTP (only if ``malformed``)."""
        self.tally["answers"] += 1
        if answer.status >= 500:
            self.tally["5xx"] += 1
        assert answer.status < 500, (answer, self.tail())
        if answer.body == b"Invalid HTTP request received.":
            # uvicorn's own plain-text 400, before the app sees the request.
            assert malformed, f"a well-formed request was refused as not HTTP: {answer}"
            assert answer.status == 400
            self.tally["not HTTP"] += 1
            return None
        assert answer.headers.get("content-type") == "application/json", answer
        data = json.loads(answer.body)
        if answer.status >= 400:
            assert isinstance(data.get("error"), str) and data["error"], answer
        return data

    def alive(self) -> None:
        """The server process runs and answers /healthz."""
        assert self.server.proc is not None and self.server.proc.poll() is None, self.tail()
        answer = self.send(b"/healthz", b"", method=b"GET", key="")
        assert answer.status == 200 and json.loads(answer.body)["status"] == "ok"

    def json_lines(self, *command: str) -> list[Any]:
        """What a CLI command prints as JSON lines. Split at '\\n' only: a JSON string
        may hold U+0085 or U+2028, which str.splitlines() also breaks at."""
        out = self.server.cli(*command, check=True).stdout
        return [json.loads(line) for line in out.split("\n") if line]

    def quiet(self) -> None:
        """Nothing failed in a way the server did not expect (it logs a traceback then)."""
        output = "".join(self.server.output)
        at = output.find("Traceback")
        assert at < 0, output[max(0, at - 2000) : at + 3000]

    def tail(self) -> str:
        return "".join(self.server.output[-60:])

    def settle(self) -> None:
        """Wait until every event is dispatched and no delivery waits for a retry."""
        wait_until(self.server.idle, timeout=60, what="every delivery settled")


@pytest.fixture(scope="module")
def fuzz(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fuzz]:
    root = tmp_path_factory.mktemp("fuzz")
    app = root / "app"
    app.mkdir()
    (app / "rulebus.yaml").write_text(APP)
    receiver = Receiver()
    server = Server(app, root / "data", {"FUZZ_WEBHOOK_URL": receiver.url}).start()
    Server.running.remove(server)  # shared by the module's tests, stopped here
    fuzz = Fuzz(server, receiver, root)
    started = time.monotonic()
    try:
        yield fuzz
        fuzz.alive()
        fuzz.quiet()
    finally:
        server.stop()
        receiver.close()
        t = fuzz.tally
        line = (
            f"fuzz: {t['topics']} topics, {t['ids']} ids, {t['keys']} keys,"
            f" {t['levels']} template levels, {t['client ids']} client ids,"
            f" {t['subs']} republish values, {t['names']} object-key values,"
            f" {t['hooks']} webhooks checked; {t['answers']} answers,"
            f" {t['not HTTP']} refused as not HTTP, {t['5xx']} 5xx"
            f" ({time.monotonic() - started:.0f} s, scale {SCALE:g})"
        )
        # Past the output capture, so that every run shows the figures.
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if capture is not None and reporter is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line("\n" + line)
        else:
            print(line)


def accept(fuzz: Fuzz, data: dict[str, Any], topic: str, payload: Any) -> None:
    """Record an accepted event, after checking that its topic is one."""
    assert validate_topic(data["topic"]) == topic
    assert topic_ok(topic), topic
    if not data.get("duplicate"):  # a repeated id stores nothing: the first event stays
        fuzz.accepted[data["id"]] = (topic, payload)


def summary(problems: list[tuple[str, str]]) -> str:
    """Problems by kind: how many of each, and the first few."""
    kinds: dict[str, list[str]] = defaultdict(list)
    for kind, detail in problems:
        kinds[kind].append(detail)
    return "\n".join(
        f"{len(details)} x {kind}:\n  " + "\n  ".join(details[:4])
        for kind, details in kinds.items()
    )


# -- 1. Ingest ---------------------------------------------------------------


def test_topics_from_paths(fuzz: Fuzz) -> None:
    """POST /topics/...: a topic is published exactly as sent, or refused with a 400 that
    says why; never a 5xx."""

    @budget(600)
    @given(st.lists(topic_targets(), min_size=1, max_size=4))
    def check(targets: list[tuple[bytes, str | None, bool]]) -> None:
        for target, topic, malformed in targets:
            fuzz.tally["topics"] += 1
            answer = fuzz.send(target, b'{"via": "topics"}')
            data = fuzz.judge(answer, malformed)
            if data is None:
                continue
            if malformed:
                # Raw bytes: the topic depends on where HTTP ends the path ('?',
                # '#'); what was taken must still be a topic.
                if answer.status == 202:
                    accept(fuzz, data, data["topic"], {"via": "topics"})
            elif topic is None:
                assert answer.status == 400, (target, answer)
                assert "not valid UTF-8" in data["error"]
            elif topic_ok(topic):
                assert answer.status == 202, (target, topic, answer)
                assert data["topic"] == topic, (target, data)
                assert _UUID.fullmatch(data["id"])
                accept(fuzz, data, topic, {"via": "topics"})
            else:
                assert answer.status == 400, (target, topic, answer)
                assert data["error"].startswith("invalid topic"), data
        fuzz.alive()

    check()
    fuzz.quiet()


def _expect_item(item: dict[str, Any]) -> tuple[bool | None, tuple[str, ...]]:
    """Whether a route must take ``item`` (None: either way), and the words one of
    which a refusal must say."""
    kind = item.get("kind")
    if kind is None:
        return False, ("missing required field 'kind'",)
    if item.get("id") is not None and not id_ok(item["id"]):
        return False, ("invalid id",)
    level = rendered(kind)
    if level is None:
        return None, ("invalid topic",)
    return level_ok(level) and topic_ok(f"in/{level}"), ("invalid topic",)


def _check_item(fuzz: Fuzz, item: dict[str, Any], result: dict[str, Any], status: int) -> None:
    """One event's answer (or one result of a batch) against what the docs promise."""
    must, reasons = _expect_item(item)
    if "error" in result:
        assert must is not True, (item, result)
        assert status in (400, 413), (item, result)
        assert any(r in result["error"] for r in reasons), (item, result)
        return
    assert must is not False, (item, result)
    level = rendered(item["kind"])
    if level is not None:
        assert result["topic"] == f"in/{level}", (item, result)
    else:  # a number or a structure: whatever its text, it is one word
        assert level_ok(result["topic"].removeprefix("in/")), (item, result)
    if item.get("id") is None:
        assert _UUID.fullmatch(result["id"]), result
    else:
        assert result["id"] == item["id"], (item, result)
    accept(fuzz, result, result["topic"], item)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": draw(st.one_of(VALUES, WORD))}
    if draw(st.booleans()):
        body["id"] = draw(IDS)
    return body


def test_route_levels_and_ids(fuzz: Fuzz) -> None:
    """POST /event and /events: a topic level or id from the body is taken when it is
    one word or a valid id, and refused with a 400 that names it otherwise; so is a
    rulebus-client-id header."""

    @budget(150)
    @given(
        st.lists(bodies(), min_size=1, max_size=12),
        st.one_of(st.none(), NASTY_TEXT, st.from_regex(_CLIENT_ID.pattern, fullmatch=True)),
        st.booleans(),
    )
    def check(items: list[dict[str, Any]], client_id: str | None, ndjson: bool) -> None:
        fuzz.tally["levels"] += len(items) + 1
        fuzz.tally["ids"] += sum(1 for item in items if "id" in item) + ("id" in items[0])
        headers = []
        client_refused = malformed = False
        if client_id is not None:
            fuzz.tally["client ids"] += 1
            raw = client_id.encode()
            headers.append((b"rulebus-client-id", raw))
            # The server reads header bytes as latin-1, without the spaces around them.
            client_refused = not _CLIENT_ID.fullmatch(raw.strip(b" \t").decode("latin-1"))
            # A line break in it ends the header: what follows is another request,
            # of which only the general promises can be checked.
            malformed = not_http(raw)

        # The batch route: one answer, a result per item; then the single route.
        if ndjson:  # the batch route's other form: a JSON document a line
            lines = b"\n".join(json.dumps(item).encode() for item in items)
            batch = fuzz.send(b"/events", lines, headers, content_type=b"application/x-ndjson")
        else:
            batch = fuzz.send(b"/events", json.dumps(items).encode(), headers)
        single = fuzz.send(b"/event", json.dumps(items[0]).encode(), headers)
        for answer in (batch, single):
            data = fuzz.judge(answer, malformed)
            if malformed:
                continue
            if client_refused:
                assert answer.status == 400 and "rulebus-client-id" in data["error"], answer
            elif answer is batch:
                refused = sum("error" in result for result in data["results"])
                assert answer.status == (207 if refused else 200), answer
                assert (data["accepted"], data["rejected"]) == (len(items) - refused, refused)
                assert len(data["results"]) == len(items)
                for item, result in zip(items, data["results"], strict=True):
                    _check_item(fuzz, item, result, result.get("status", 0))
            else:
                if answer.status in (200, 202):
                    assert data["duplicate"] is (answer.status == 200), answer
                _check_item(fuzz, items[0], data, answer.status)
        fuzz.alive()

    check()
    fuzz.quiet()


def test_authorization_values(fuzz: Fuzz) -> None:
    """Anything but the server's key in Authorization is a 401 with WWW-Authenticate,
    on every route that needs a key, before the body is looked at."""
    routes = [
        (b"POST", b"/topics/in/auth", b'{"kind": "auth"}'),
        (b"POST", b"/event", b'{"kind": "auth"}'),
        (b"POST", b"/events", b'[{"kind": "auth"}]'),
        (b"GET", b"/admin/stats", b""),
    ]

    def attempt(value: bytes, n: int) -> None:
        method, target, body = routes[n % len(routes)]
        answer = fuzz.send(target, body, [(b"authorization", value)], method=method, key="")
        data = fuzz.judge(answer, not_http(value))
        if data is not None:
            assert answer.status == 401, (value[:100], answer)
            assert answer.headers.get("www-authenticate") == "Bearer", answer

    # Keys that look valid make the server read its key store, at most 20
    # times a second: sent together, they share the reads.
    with ThreadPoolExecutor(16) as pool:

        @budget(60)
        @given(st.lists(authorizations(fuzz.server.key), min_size=1, max_size=16))
        def check(values: list[bytes]) -> None:
            fuzz.tally["keys"] += len(values)
            list(pool.map(attempt, values, range(len(values))))
            fuzz.alive()

        check()

    # The key itself still works, in each spelling of the scheme RFC 7235 allows.
    for scheme in (b"Bearer ", b"bearer ", b"BEARER  "):
        value = scheme + fuzz.server.key.encode()
        answer = fuzz.send(b"/topics/in/auth", b"{}", [(b"authorization", value)], key="")
        assert answer.status == 202, (scheme, answer)
    fuzz.quiet()


# -- 2. Republished topics and object keys -------------------------------------

BUCKET_FILES = re.compile(
    r"(bus|tables)\.sqlite3(-wal|-shm|-journal|-writer\.lock)?|keys\.db(-wal|-shm|-journal)?"
    r"|engine\.lock"
)


def test_republished_topics_and_object_keys(fuzz: Fuzz) -> None:
    """Payload fields that become a republished topic and object keys: each delivery
    either publishes a valid topic / writes inside the bucket, or fails into the
    error action and a dead letter that says why; nothing is written elsewhere."""
    sent: dict[str, dict[str, Any]] = {}  # id -> body

    @budget(60)
    @given(st.lists(st.tuples(VALUES, VALUES), min_size=1, max_size=16))
    def check(pairs: list[tuple[Any, Any]]) -> None:
        items = [
            {"kind": "p2", "id": f"p2-{uuid.uuid4().hex}", "sub": sub, "name": name}
            for sub, name in pairs
        ]
        fuzz.tally["subs"] += len(items)
        fuzz.tally["names"] += len(items)
        answer = fuzz.send(b"/events", json.dumps(items).encode())
        data = fuzz.judge(answer)
        assert answer.status == 200, answer  # nothing here is a topic level or an id
        for item, result in zip(items, data["results"], strict=True):
            accept(fuzz, result, "in/p2", item)
            sent[item["id"]] = item
        fuzz.alive()

    check()
    fuzz.settle()

    letters: dict[tuple[str, str], dict[str, Any]] = {}
    for letter in fuzz.json_lines("dlq", "ls"):
        # The seen rule's events are the republished ones: found by their source.
        source = letter["payload"].get("src") if letter["rule"] == "seen" else None
        letters[(source or letter["event_id"], letter["rule"])] = letter
    republished = {
        row["src"]: row["topic"] for row in fuzz.json_lines("table", "scan", "republished")
    }
    bucket = fuzz.root / "data" / "buckets" / "fuzz-archive"
    problems = []
    for id_, item in sent.items():
        # The republish: to out/<sub>, or a dead letter saying the topic is invalid.
        sub = rendered(item["sub"])
        letter = letters.get((id_, "forward"))
        if id_ in republished:
            topic = republished[id_]
            if not topic_ok(topic) or (sub is not None and topic != f"out/{sub}"):
                problems.append(("republished to a wrong topic", f"{item!r}: {topic!r}"))
            if letter is not None:
                problems.append(("republished and dead-lettered", f"{item!r}: {letter}"))
        elif (id_, "seen") in letters:
            problems.append(("republished, then not recorded", str(letters[(id_, "seen")])))
        elif letter is None:
            problems.append(("neither republished nor dead-lettered", repr(item)))
        else:
            message = letter["failures"][0]["errorMessage"]
            if "invalid topic" not in message or (sub is not None and topic_ok(f"out/{sub}")):
                problems.append(("dead-lettered without cause", f"{item!r}: {message}"))

        # The two objects: each written at its key, or a failure that names it.
        name = rendered(item["name"])
        if name is None:
            continue
        letter = letters.get((id_, "archive"))
        failures = [f["errorMessage"] for f in letter["failures"]] if letter else []
        expected = 0
        for key in (f"{name}.json", f"raw/{name}"):
            if not key_ok(key):
                expected += 1
                if not any("invalid object key" in m and repr(key) in m for m in failures):
                    problems.append(("a bad key not refused", f"{key!r}: {failures}"))
            elif not (bucket / key).is_file():
                # A file store cannot hold a key and keys below it ('a' and
                # 'a/b'), where S3 can: then the delivery must say which key.
                expected += 1
                if not any(key in m for m in failures):
                    problems.append(("a good key not written", f"{key!r}: {failures}"))
        if len(failures) != expected:
            problems.append(("failures that do not fit", f"{item!r}: {failures}"))
    assert not problems, summary(problems)

    # Every file under the temporary root is one rulebus keeps, or an object
    # whose key is valid, inside the bucket, made of its event's name.
    strays = []
    for path in fuzz.root.rglob("*"):
        if path.is_dir():
            continue
        relative = path.relative_to(fuzz.root)
        if relative == Path("app/rulebus.yaml"):
            continue
        if relative.parent == Path("data") and BUCKET_FILES.fullmatch(relative.name):
            continue
        if relative.parts[:2] in (("data", "run"), ("data", "metrics")):
            continue  # the processes' pid files (for reloads) and their metrics
        if relative.parts[:3] == ("data", "buckets", "fuzz-archive"):
            key = "/".join(relative.parts[3:])
            try:
                name = rendered(fuzz.accepted[json.loads(path.read_bytes())["id"]][1]["name"])
            except (ValueError, KeyError, TypeError):
                name = "not the object of an event sent"
            if key_ok(key) and (name is None or key in (f"{name}.json", f"raw/{name}")):
                continue
        strays.append(str(relative))
    assert not strays, strays
    # And the CLI lists exactly those keys, one a line.
    listed = fuzz.server.cli("bucket", "ls", "fuzz-archive", check=True).stdout.split("\n")
    walked = sorted(str(p.relative_to(bucket)) for p in bucket.rglob("*") if p.is_file())
    assert sorted(line for line in listed if line) == walked
    assert "" not in listed[:-1], "an empty line in the listing: a key with a line break"
    fuzz.quiet()


# -- 3. Webhook headers ------------------------------------------------------------

HEADERS = {
    "host",
    "content-length",
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "rulebus-event-id",
    "rulebus-topic",
    "rulebus-notification",
}
UNICODE_TOPIC = st.lists(
    st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=12),
    min_size=1,
    max_size=8,
).map("/".join)


def delivered_topics(fuzz: Fuzz, problems: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Every webhook request the receiver got, checked: exactly the expected headers,
    a signature that verifies, a percent-encoded topic. Returns event id -> topics."""
    delivered: dict[str, list[str]] = defaultdict(list)
    for request in list(fuzz.receiver.received):
        fuzz.tally["hooks"] += 1
        headers = {name.lower(): value for name, value in request.headers.items()}
        if set(headers) != HEADERS:
            problems.append(("other headers", f"{sorted(headers)}, body {request.body[:160]!r}"))
            continue
        if not signature_ok(headers, request.body):
            problems.append(("a signature that does not verify", repr(headers)))
        if not (
            _UUID.fullmatch(headers["webhook-id"])
            and headers["webhook-timestamp"].isdigit()
            and headers["rulebus-notification"] == "hooks"
            and headers["content-type"] == "application/json"
            and (id_ok(headers["rulebus-event-id"]) or _UUID.fullmatch(headers["rulebus-event-id"]))
        ):
            problems.append(("a header value out of shape", repr(headers)))
        raw = headers["rulebus-topic"]
        if not all(" " < c < "\x7f" for c in raw):
            problems.append(("rulebus-topic not percent-encoded", repr(raw)))
        try:
            topic = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            problems.append(("rulebus-topic not UTF-8 once decoded", repr(raw)))
            continue
        delivered[headers["rulebus-event-id"]].append(topic)
        payload = json.loads(request.body)
        if isinstance(payload, dict) and "src" in payload:  # republished by forward
            sub = rendered(payload.get("sub"))
            if topic != f"out/{sub}" and sub is not None:
                problems.append(("a republished event's topic changed", repr(topic)))
    return delivered


def test_webhook_headers(fuzz: Fuzz) -> None:
    """What reaches a webhook's headers (topics in any script, ids from bodies): every
    request has exactly the expected headers, rulebus-topic decodes to the event's
    topic, and the signature verifies. Checks every event of the module."""

    @budget(80)
    @given(
        st.lists(UNICODE_TOPIC.filter(topic_ok), min_size=1, max_size=6),
        st.lists(IDS.filter(id_ok) | IDS, min_size=1, max_size=6),
    )
    def check(topics: list[str], ids: list[Any]) -> None:
        fuzz.tally["topics"] += len(topics)
        fuzz.tally["ids"] += len(ids)
        for topic in topics:
            answer = fuzz.send(b"/topics/" + quote(topic, safe="/").encode(), b'{"via": "hook"}')
            data = fuzz.judge(answer)
            assert answer.status == 202 and data["topic"] == topic, (topic, answer)
            accept(fuzz, data, topic, {"via": "hook"})
        items = [{"kind": "hook", "id": id_} for id_ in ids]
        answer = fuzz.send(b"/events", json.dumps(items).encode())
        data = fuzz.judge(answer)
        # Which ids ingest should take is the first property's business: here,
        # whatever it took must reach the webhook intact.
        for item, result in zip(items, data["results"], strict=True):
            if "id" in result:
                accept(fuzz, result, result["topic"], item)
        fuzz.alive()

    check()
    fuzz.settle()

    problems: list[tuple[str, str]] = []
    delivered = delivered_topics(fuzz, problems)
    for id_, (topic, _) in fuzz.accepted.items():
        if topic not in delivered.get(id_, []):
            problems.append(("an event not delivered", f"{id_!r} on {topic!r}"))
    for letter in fuzz.json_lines("dlq", "ls"):
        if letter["rule"] == "hook":
            problems.append(("a dead letter of the hook rule", repr(letter["failures"])))
    assert not problems, summary(problems)
    fuzz.quiet()


# -- Inputs this module found ------------------------------------------------
# Plain cases, each failing on its own: as @example, a known failure would stop
# its property before it explored anything else.


def test_found_a_percent_encoded_prefix_keeps_the_topic(fuzz: Fuzz) -> None:
    """'/topic%73/a' is the path '/topics/a' (RFC 3986 6.2.2.2); it was published to
    '3/a', and '/topics%2Fa' to '2Fa'. Either the topic is 'a' or the path is refused."""
    for target in (b"/topic%73/a", b"/%74opics/a", b"/topics%2Fa"):
        answer = fuzz.send(target, b"{}")
        data = fuzz.judge(answer)
        assert answer.status >= 400 or data["topic"] == "a", (target, data)


def test_found_an_id_with_a_trailing_line_break_is_refused(fuzz: Fuzz) -> None:
    """'abc\\n' was taken as an id (a '$' that matches before a final newline): it then
    split the rulebus-event-id header of every webhook, and the log lines."""
    answer = fuzz.send(b"/event", json.dumps({"kind": "found", "id": "found-1\n"}).encode())
    assert answer.status == 400 and "invalid id" in fuzz.judge(answer)["error"], answer
    answer = fuzz.send(b"/events", json.dumps([{"kind": "found", "id": "found-2\n"}]).encode())
    (result,) = fuzz.judge(answer)["results"]
    assert "invalid id" in result.get("error", ""), result


def test_found_an_object_key_with_a_trailing_line_break_is_refused(fuzz: Fuzz) -> None:
    """The key 'raw/nl\\n' was written: a file name with a line break in the bucket,
    and an empty line in `rulebus bucket ls`."""
    id_ = f"found-{uuid.uuid4().hex}"
    body = {"kind": "found", "id": id_, "name": "nl\n"}
    assert fuzz.send(b"/event", json.dumps(body).encode()).status == 202
    fuzz.settle()
    assert not (fuzz.root / "data" / "buckets" / "fuzz-archive" / "raw" / "nl\n").exists()
    (letter,) = [d for d in fuzz.json_lines("dlq", "ls") if d["event_id"] == id_]
    messages = [f["errorMessage"] for f in letter["failures"]]
    assert len(messages) == 2 and all("invalid object key" in m for m in messages), messages


def test_found_a_key_and_a_key_below_it(fuzz: Fuzz) -> None:
    """S3 holds 'a' and 'a/b' at once; folders cannot. The second one failed with an
    OSError the engine did not expect (a traceback in the log), retried, and a
    message made of the server's paths, not the key."""
    names = [("above", "above/x"), ("under/x", "under")]  # each order once
    ids = []
    for first, second in names:
        for name in (first, second):
            id_ = f"found-{uuid.uuid4().hex}"
            ids.append((id_, name))
            body = {"kind": "found", "id": id_, "name": name}
            assert fuzz.send(b"/event", json.dumps(body).encode()).status == 202
            fuzz.settle()  # one after the other, so that the second one meets the first
    letters = {d["event_id"]: d for d in fuzz.json_lines("dlq", "ls")}
    bucket = fuzz.root / "data" / "buckets" / "fuzz-archive"
    for id_, name in ids:
        for key in (f"{name}.json", f"raw/{name}"):
            if (bucket / key).is_file():
                continue
            failures = [f["errorMessage"] for f in letters[id_]["failures"]]
            assert any(key in m for m in failures), (key, failures)
            assert not any(str(fuzz.root) in m for m in failures), failures
    fuzz.quiet()


def test_found_webhook_topics_in_any_script(fuzz: Fuzz) -> None:
    """A topic outside latin-1 failed every webhook (UnicodeEncodeError, retried, then
    a dead letter); one inside it went out as raw latin-1 bytes, and '%41' as is."""
    sent = {}
    for topic in ("found/café", "found/€/😀", "found/a%41"):
        answer = fuzz.send(b"/topics/" + quote(topic, safe="/").encode(), b"{}")
        sent[fuzz.judge(answer)["id"]] = topic
    fuzz.settle()
    for request in fuzz.receiver.received:
        topic = sent.pop(request.headers.get("rulebus-event-id", ""), None)
        if topic is not None:
            raw = request.headers["rulebus-topic"]
            assert raw.isascii() and unquote(raw, errors="strict") == topic, (raw, topic)
    assert not sent, f"not delivered: {sent}"
