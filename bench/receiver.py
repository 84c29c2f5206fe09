"""The webhook receiver, in its own process: ``python -m bench.receiver --port P``.

Counts ``POST``s to any path, the distinct event ids among them (delivery is
at-least-once, so a retry must not count twice) and, with ``--secret``, the ones whose
Standard Webhooks signature does not verify. ``GET /count`` returns the counters.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

from bench.signing import verify


def _event_id(body: bytes) -> str | None:
    """The event id in a notification body, at the top or under payload/event/data."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    for candidate in (doc, doc.get("payload"), doc.get("event"), doc.get("data")):
        if isinstance(candidate, dict) and isinstance(candidate.get("id"), str):
            return candidate["id"]
    return None


def make_app(secret: str | None) -> web.Application:
    seen: set[str] = set()
    counts = {"posts": 0, "unique": 0, "bad_signature": 0, "unreadable": 0}

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        counts["posts"] += 1
        if secret is not None and not verify(secret, request.headers, body):
            counts["bad_signature"] += 1
            return web.Response(status=401)
        event_id = _event_id(body) or request.headers.get("webhook-id")
        if event_id is None:
            counts["unreadable"] += 1
        elif event_id not in seen:
            seen.add(event_id)
            counts["unique"] += 1
        return web.Response(status=204)

    async def count(request: web.Request) -> web.Response:
        return web.json_response(counts)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/count", count)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{tail:.*}", receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", default=None, help="whsec_... to verify signatures")
    args = parser.parse_args()
    web.run_app(
        make_app(args.secret),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=lambda msg: print(msg, flush=True),
    )


if __name__ == "__main__":
    main()
