"""The pipeline's steps as FastStream subscribers, one durable pull consumer per step.

Two worker processes share each consumer, so each message goes to one of them;
a message is acknowledged after its handler returns, and redelivered if the
handler raises or the process dies first. The table is SQLite in WAL mode with
``synchronous=NORMAL``, written with ``INSERT OR REPLACE`` so a redelivery never
adds a second row, as in the Celery peer.
"""

from __future__ import annotations

from typing import Any

import httpx
from faststream import FastStream
from faststream.nats import JStream, NatsBroker, PullSub

from bench.events import is_fraud
from bench.peers.common import (
    INSERT_ROW,
    WEBHOOK_URL,
    connect_table,
    encode,
    webhook_request,
    write_alert,
)
from bench.peers.faststream_app import config

# Warnings and errors only: FastStream logs two lines per message at INFO (the
# Celery peer's worker runs with --loglevel WARNING too).
broker = NatsBroker(config.NATS_URL, logger=config.quiet_logger())
app = FastStream(broker)
stream = JStream(config.STREAM, subjects=[config.SUBJECTS], declare=False)
# Fetch up to 64 messages per pull; handle up to 32 at once (the I/O-bound steps
# would crawl one message at a time).
PULL = PullSub(batch_size=64)
CONCURRENCY = 32

_db = connect_table(check_same_thread=False)
_http = httpx.AsyncClient(timeout=10)


@broker.subscriber(config.event_subject("*"), stream=stream, durable="archive", pull_sub=PULL)
async def archive_event(event: dict[str, Any]) -> None:
    """Step 2: every event becomes a row of ``events``."""
    _db.execute(INSERT_ROW, (event["id"], encode(event)))


@broker.subscriber(
    config.event_subject("buy"),
    stream=stream,
    durable="fraud",
    pull_sub=PULL,
    max_workers=CONCURRENCY,
)
async def fraud_check(event: dict[str, Any]) -> None:
    """Step 3: buys go through the example's deterministic fraud rule."""
    if is_fraud(event["id"]):
        await broker.publish(event, config.ALERT_SUBJECT, stream=config.STREAM)


@broker.subscriber(config.ALERT_SUBJECT, stream=stream, durable="archive_alert", pull_sub=PULL)
async def archive_alert(event: dict[str, Any]) -> None:
    """Step 4a: the fraud alert as ``<id>.json``."""
    write_alert(event)


@broker.subscriber(
    config.ALERT_SUBJECT,
    stream=stream,
    durable="notify",
    pull_sub=PULL,
    max_workers=CONCURRENCY,
)
async def notify_alert(event: dict[str, Any]) -> None:
    """Step 4b: POST the alert to the webhook, signed the Standard Webhooks way."""
    body, headers = webhook_request(event)
    response = await _http.post(WEBHOOK_URL, content=body, headers=headers)
    response.raise_for_status()


@app.after_startup
async def _announce() -> None:
    print("peer worker ready", flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.run(app.run())
