"""The pipeline's steps as Celery tasks, one task per step per event.

The table is SQLite in WAL mode with ``synchronous=NORMAL`` (the common advice for
a fast and safe SQLite behind workers), written with ``INSERT OR REPLACE`` so a
redelivered task never adds a second row. ``acks_late`` keeps a task in Redis until
it has run, which is as durable as Redis without persistence allows.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
from celery import Celery
from celery.signals import worker_ready

from bench.events import is_fraud
from bench.peers.celery_app import config
from bench.peers.common import (
    INSERT_ROW,
    WEBHOOK_URL,
    connect_table,
    encode,
    webhook_request,
    write_alert,
)

app = Celery("exchange", broker=config.REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

# One connection and one HTTP client per worker process, opened on first use
# (prefork children must not inherit them from the parent).
_db: sqlite3.Connection | None = None
_http: httpx.Client | None = None


def db() -> sqlite3.Connection:
    global _db
    if _db is None:
        _db = connect_table()
    return _db


def http() -> httpx.Client:
    global _http
    if _http is None:
        _http = httpx.Client(timeout=10)
    return _http


@app.task
def archive_event(event: dict[str, Any]) -> None:
    """Step 2: every event becomes a row of ``events``."""
    db().execute(INSERT_ROW, (event["id"], encode(event)))


@app.task
def fraud_check(event: dict[str, Any]) -> None:
    """Step 3: buys go through the example's deterministic fraud rule."""
    if is_fraud(event["id"]):
        archive_alert.delay(event)
        notify_alert.delay(event)


@app.task
def archive_alert(event: dict[str, Any]) -> None:
    """Step 4a: the fraud alert as ``<id>.json``."""
    write_alert(event)


@app.task(autoretry_for=(httpx.HTTPError,), retry_backoff=True, max_retries=5)
def notify_alert(event: dict[str, Any]) -> None:
    """Step 4b: POST the alert to the webhook, signed the Standard Webhooks way."""
    body, headers = webhook_request(event)
    http().post(WEBHOOK_URL, content=body, headers=headers).raise_for_status()


@worker_ready.connect
def _announce(**_: object) -> None:
    print("peer worker ready", flush=True)
