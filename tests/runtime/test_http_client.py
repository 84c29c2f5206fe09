"""The webhook client against real sockets speaking the variants of HTTP/1.x servers use."""

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from rulebus.egress import Egress, EgressRefused
from rulebus.http_client import BadHeader, HttpClient, HttpError
from tests.runtime.helpers import make_certificate

# The servers here listen on loopback, which the client refuses unless allowed.
LOOPBACK = Egress.parse(["127.0.0.0/8"])

Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(respond: Respond) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/hook?x=1"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_keeps_one_connection_alive_across_requests() -> None:
    """Successive POSTs reuse the connection, and the request carries body and headers."""
    seen: list[bytes] = []
    connections = 0

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async def main() -> None:
        server, url = await serve(respond)
        client = HttpClient(egress=LOOPBACK)
        statuses = [(await client.post(url, b'{"a":1}', {"x-h": "v"}, 5)).status for _ in range(3)]
        await client.close()
        server.close()
        assert statuses == [200, 200, 200]
        assert connections == 1
        assert seen[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
        assert b"\r\nx-h: v\r\n" in seen[0] and seen[0].endswith(b'\r\n\r\n{"a":1}')

    run(main())


def test_reads_chunked_bodies_and_http_1_0_answers() -> None:
    """Chunked bodies are consumed whole; an HTTP/1.0 answer closes the connection."""
    answers = [
        b"HTTP/1.1 503 Busy\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.0 204 No Content\r\n\r\n",
        b"HTTP/1.1 201 Created\r\n\r\nbody until close",
    ]

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            answer = answers.pop(0)
            writer.write(answer)
            if not answer.startswith(b"HTTP/1.1 503"):
                writer.close()
                return

    async def main() -> None:
        server, url = await serve(respond)
        client = HttpClient(egress=LOOPBACK)
        assert (await client.post(url, b"{}", {}, 5)).status == 503
        assert (await client.post(url, b"{}", {}, 5)).status == 204
        assert (await client.post(url, b"{}", {}, 5)).status == 201
        await client.close()
        server.close()

    run(main())


def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    """A server that closes idle connections costs a reconnect, not a failure."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()  # without saying "connection: close"

    async def main() -> None:
        server, url = await serve(respond)
        client = HttpClient(egress=LOOPBACK)
        assert (await client.post(url, b"{}", {}, 5)).status == 200
        await asyncio.sleep(0.05)
        assert (await client.post(url, b"{}", {}, 5)).status == 200
        await client.close()
        server.close()

    run(main())


def test_silence_times_out_and_refusal_is_an_error() -> None:
    """No answer within the timeout, or nobody listening, is an HttpError."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        server, url = await serve(respond)
        client = HttpClient(egress=LOOPBACK)
        with pytest.raises(HttpError, match=r"no answer within 0\.2s"):
            await client.post(url, b"{}", {}, 0.2)
        server.close()
        with pytest.raises(HttpError, match="cannot connect"):
            await client.post("http://127.0.0.1:9/nobody", b"{}", {}, 2)
        with pytest.raises(HttpError, match=r"not an HTTP/1\.x response"):
            garbage, garbage_url = await serve(_garbage)
            await client.post(garbage_url, b"{}", {}, 2)
        garbage.close()
        await client.close()

    run(main())


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
    await writer.drain()


def test_concurrent_posts_share_at_most_limit_connections() -> None:
    """Posts beyond the pool's limit wait for a connection instead of opening more."""
    open_now = 0
    most = 0

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            while True:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                await asyncio.sleep(0.01)
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        finally:
            open_now -= 1

    async def main() -> None:
        server, url = await serve(respond)
        client = HttpClient(limit=2, egress=LOOPBACK)
        answers = await asyncio.gather(*(client.post(url, b"{}", {}, 5) for _ in range(10)))
        await client.close()
        server.close()
        assert [a.status for a in answers] == [204] * 10
        assert most == 2

    run(main())


def test_an_answer_cut_short_is_an_error() -> None:
    """A connection that closes in the middle of an answer fails the request."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(respond)
        client = HttpClient(egress=LOOPBACK)
        with pytest.raises(HttpError, match="closed in the middle of the answer"):
            await client.post(url, b"{}", {}, 5)
        await client.close()
        server.close()

    run(main())


def test_an_interim_1xx_answer_is_skipped_for_the_final_one() -> None:
    """A 100 Continue before the real answer does not become the request's status."""
    statuses = iter([201, 202])

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            status = next(statuses)
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                + f"HTTP/1.1 {status} Done\r\ncontent-length: 0\r\n\r\n".encode()
            )

    async def main() -> None:
        server, url = await serve(respond)
        client = HttpClient(limit=1, egress=LOOPBACK)
        assert [(await client.post(url, b"{}", {}, 5)).status for _ in range(2)] == [201, 202]
        await client.close()
        server.close()

    run(main())


def test_a_failed_connection_frees_its_place_for_waiting_posts() -> None:
    """When connecting fails, posts waiting for a place fail at once, not at their time-out."""

    async def main() -> None:
        client = HttpClient(limit=1, egress=LOOPBACK)
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            *(client.post("http://127.0.0.1:9/nobody", b"{}", {}, 5) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, HttpError) and "cannot connect" in str(r) for r in results)
        assert asyncio.get_running_loop().time() - started < 2
        await client.close()

    run(main())


async def refused_before_connecting(client: HttpClient, headers: dict[str, str]) -> Exception:
    """What ``client.post`` raised, having made no connection to a live server."""
    connections = 0

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server, url = await serve(respond)
    try:
        await client.post(url, b"{}", headers, 2)
    except Exception as exc:
        error = exc
    else:
        raise AssertionError("the request was sent")
    finally:
        await client.close()
        server.close()
    assert connections == 0
    return error


def test_a_header_that_would_split_the_request_is_refused_and_nothing_is_sent() -> None:
    """CR, LF and NUL in a value, or a name that is not a token, never reach the wire."""
    for headers in (
        {"rulebus-topic": "x\r\nx-injected: yes"},
        {"rulebus-topic": "x\nx-injected: yes"},
        {"rulebus-topic": "x\x00y"},
        {"x-injected: yes\r\nx": "v"},
    ):
        error = asyncio.run(refused_before_connecting(HttpClient(egress=LOOPBACK), headers))
        assert isinstance(error, BadHeader) and "header" in str(error)


def test_by_default_the_client_connects_to_public_addresses_only() -> None:
    """Without an allow list, a loopback server is not even connected to."""
    error = asyncio.run(refused_before_connecting(HttpClient(), {}))
    assert isinstance(error, EgressRefused) and "127.0.0.1 is loopback" in str(error)


def test_https_connects_to_the_checked_address_and_verifies_the_url_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved and checked once; TLS still verifies the certificate
    against the URL's host name (SNI), not against the address connected to."""
    cert, key, ca = make_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(respond, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient(egress=LOOPBACK)
        answer = await client.post(f"https://localhost:{port}/hook", b"{}", {}, 5)
        await client.close()
        server.close()
        assert answer.status == 204
        assert names == ["localhost"]

    run(main())
