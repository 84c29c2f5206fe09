"""The Python load generator, run in its own process: ``python -m bench.loadgen MODE ...``.

Three modes, each printing one JSON object on stdout when done:

- ``closed``: ``--connections`` connections each send the same body back to back for
  ``--duration`` seconds (the fallback for figure 1 when ``wrk`` is not installed).
- ``batches``: the event stream ``(n, seed)`` as JSON arrays to ``POST /events``,
  ``--concurrency`` batches in flight; a 429/503 answer is back-pressure and the batch
  is sent again after a short pause. Reports the wall-clock start and end of sending.
- ``rate``: the stream as single-event ``POST /event`` at a steady ``--rate`` (open
  loop: a send is never delayed by a slow answer), writing ``id<TAB>acked_at`` per
  event to ``--acks`` for the latency figure.

Times that another process compares against are ``time.time()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from bench.events import encode_batches, make_events
from bench.httpclient import HttpConnection

BACKPRESSURE = (429, 503)


def _split(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"


def count_accepted(status: int, body: bytes, n_items: int) -> int:
    """How many items of a batch the server accepted, from its per-item results.

    Accepts a JSON list of results or an object holding one under ``results`` or
    ``items``; a result counts as accepted unless it carries an ``error`` or a status
    of 400 or more. A 2xx answer without readable per-item results counts as all.
    """
    if not 200 <= status < 300:
        return 0
    try:
        doc = json.loads(body)
    except ValueError:
        return n_items
    items = doc
    if isinstance(doc, dict):
        items = doc.get("results", doc.get("items"))
    if not isinstance(items, list):
        return n_items
    accepted = 0
    for item in items:
        if isinstance(item, dict):
            item_status = item.get("status", 200)
            if item.get("error") or (isinstance(item_status, int) and item_status >= 400):
                continue
        accepted += 1
    return accepted


async def closed_loop(url: str, body: bytes, connections: int, duration: float) -> dict[str, Any]:
    host, port, path = _split(url)
    statuses: Counter[int] = Counter()
    errors = 0

    async def worker(deadline: float) -> None:
        nonlocal errors
        conn = HttpConnection(host, port)
        raw = conn.request_bytes("POST", path, body)
        while time.perf_counter() < deadline:
            try:
                status, _ = await conn.send(raw)
                statuses[status] += 1
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                await asyncio.sleep(0.01)
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(start + duration) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    total = sum(statuses.values())
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {
        "requests": total,
        "ok": ok,
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": elapsed,
        "rps": ok / elapsed,
    }


async def send_batches(
    url: str, n: int, seed: int, batch_size: int, concurrency: int, event_type: str | None
) -> dict[str, Any]:
    host, port, path = _split(url)
    batches = encode_batches(n, seed, batch_size, event_type)
    sizes = [min(batch_size, n - i * batch_size) for i in range(len(batches))]
    queue = list(zip(batches, sizes, strict=True))
    queue.reverse()
    accepted = rejected = retries = errors = 0

    async def worker() -> None:
        nonlocal accepted, rejected, retries, errors
        conn = HttpConnection(host, port)
        while queue:
            body, size = queue.pop()
            raw = conn.request_bytes("POST", path, body)
            for attempt in range(1000):
                try:
                    status, resp = await conn.send(raw)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    await asyncio.sleep(0.05)
                    continue
                if status in BACKPRESSURE:
                    retries += 1
                    await asyncio.sleep(min(0.005 * 2**attempt, 0.2))
                    continue
                ok = count_accepted(status, resp, size)
                accepted += ok
                rejected += size - ok
                break
        conn.close()

    start = time.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "start": start,
        "end": time.time(),
        "accepted": accepted,
        "rejected": rejected,
        "retries": retries,
        "errors": errors,
    }


async def steady_rate(
    url: str, n: int, seed: int, rate: float, acks_path: str, max_inflight: int
) -> dict[str, Any]:
    host, port, path = _split(url)
    bodies = [
        (str(e["id"]), json.dumps(e, separators=(",", ":")).encode()) for e in make_events(n, seed)
    ]
    idle: list[HttpConnection] = []
    acks: list[tuple[str, float, float]] = []
    statuses: Counter[int] = Counter()
    inflight = 0
    late = 0

    async def one(event_id: str, body: bytes) -> None:
        nonlocal inflight
        conn = idle.pop() if idle else HttpConnection(host, port)
        sent = time.time()
        try:
            status, _ = await conn.send(conn.request_bytes("POST", path, body))
        except (OSError, asyncio.IncompleteReadError):
            statuses[0] += 1
            conn.close()
        else:
            statuses[status] += 1
            if 200 <= status < 300:
                acks.append((event_id, sent, time.time()))
            idle.append(conn)
        finally:
            inflight -= 1

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    wall_start = time.time()
    for i, (event_id, body) in enumerate(bodies):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0.001:
            await asyncio.sleep(delay)
        elif delay < -0.05:
            late += 1  # the generator itself fell behind the schedule
        while inflight >= max_inflight:
            await asyncio.sleep(0.0005)
        inflight += 1
        task = asyncio.create_task(one(event_id, body))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for conn in idle:
        conn.close()
    with open(acks_path, "w") as f:
        for event_id, sent, acked in acks:
            f.write(f"{event_id}\t{sent:.6f}\t{acked:.6f}\n")
    return {
        "start": wall_start,
        "sent": n,
        "acked": len(acks),
        "statuses": {str(k): v for k, v in statuses.items()},
        "late_sends": late,
        "achieved_rate": n / elapsed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    sub = parser.add_subparsers(dest="mode", required=True)
    closed = sub.add_parser("closed")
    closed.add_argument("url")
    closed.add_argument("--body", required=True)
    closed.add_argument("--connections", type=int, default=32)
    closed.add_argument("--duration", type=float, default=5.0)
    batches = sub.add_parser("batches")
    batches.add_argument("url")
    batches.add_argument("--n", type=int, required=True)
    batches.add_argument("--seed", type=int, default=1)
    batches.add_argument("--batch-size", type=int, default=1000)
    batches.add_argument("--concurrency", type=int, default=4)
    batches.add_argument("--type", default=None, help="give every event this type")
    rate = sub.add_parser("rate")
    rate.add_argument("url")
    rate.add_argument("--n", type=int, required=True)
    rate.add_argument("--seed", type=int, default=1)
    rate.add_argument("--rate", type=float, default=5000.0)
    rate.add_argument("--acks", required=True)
    rate.add_argument("--max-inflight", type=int, default=256)
    args = parser.parse_args(argv)

    if args.mode == "closed":
        coro = closed_loop(args.url, args.body.encode(), args.connections, args.duration)
    elif args.mode == "batches":
        coro = send_batches(
            args.url, args.n, args.seed, args.batch_size, args.concurrency, args.type
        )
    else:
        coro = steady_rate(args.url, args.n, args.seed, args.rate, args.acks, args.max_inflight)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(coro)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
