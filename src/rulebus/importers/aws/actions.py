"""AWS IoT topic rule actions → rulebus actions.

Each converter reads one action's options (CloudFormation's PascalCase or the
API's camelCase, through ``Props``) and returns the rulebus action as
``(kind, options)``, or raises ``Skip`` with the reason it has no counterpart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rulebus.importers.aws.convert import Props

AMQP_URL = "amqp://127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"

Converted = tuple[str, dict[str, Any]]


class Skip(Exception):
    """An action, resource or option that rulebus import does not convert, and why."""


def _dynamodb_v2(p: Props) -> Converted:
    put = p.sub("putItem")
    return "table", {"name": p.conv.table(put.need("tableName"), [], p.entry)}


def _dynamodb(p: Props) -> Converted:
    hash_field = p.need("hashKeyField")
    range_field = p.text("rangeKeyField")
    key = [hash_field] + ([range_field] if range_field else [])
    options: dict[str, Any] = {"name": p.conv.table(p.need("tableName"), key, p.entry)}
    for part in ("hash", "range"):
        field = p.text(f"{part}KeyField")
        if field is None:
            continue
        options[f"{part}_key_field"] = field
        options[f"{part}_key_value"] = p.need(f"{part}KeyValue")
        kind = p.text(f"{part}KeyType")
        if kind is not None:
            options[f"{part}_key_type"] = kind.lower()
    options["payload_field"] = p.text("payloadField") or "payload"
    operation = p.text("operation")
    if operation not in (None, "INSERT", "${operation}"):
        p.note("operation", f"operation {operation} becomes a put of the whole item")
    return "table", options


def _s3(p: Props) -> Converted:
    if p.has("cannedAcl"):
        p.note("cannedAcl", "dropped: rulebus buckets have no ACLs")
    bucket = p.conv.bucket(p.need("bucketName"), p.entry)
    return "object", {"bucket": bucket, "key": p.need("key")}


def _sns(p: Props) -> Converted:
    if p.has("messageFormat"):
        p.note("messageFormat", "dropped: every subscriber gets the output as JSON")
    return "notify", {"topic": p.conv.notification(p.need("targetArn"), p.entry)}


def _lambda(p: Props) -> Converted:
    return "function", {"name": p.conv.function(p.need("functionArn"), p.entry)}


def _republish(p: Props) -> Converted:
    for option in ("qos", "headers"):
        if p.has(option):
            p.note(option, f"{option} dropped: republish appends to the bus, which has neither")
    return "republish", {"topic": p.need("topic")}


def _http(p: Props) -> Converted:
    options: dict[str, Any] = {"url": p.need("url")}
    headers = p.get("headers") or []
    if headers:
        options["headers"] = {
            str(h.get("key", h.get("Key"))): h.get("value", h.get("Value")) for h in headers
        }
    if p.has("confirmationUrl"):
        p.note("confirmationUrl", "dropped: rulebus sends without a destination confirmation")
    if p.has("auth"):
        p.note("auth", "dropped: rulebus does not sign requests with SigV4")
    return "http", options


def _sqs(p: Props) -> Converted:
    queue = p.need("queueUrl").rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    p.note(
        "queueUrl",
        f"RabbitMQ at {AMQP_URL} plays SQS: queue {queue!r} (change url, or use url_env)",
    )
    if p.has("useBase64"):
        p.note("useBase64", "dropped: messages are JSON")
    return "amqp", {"url": AMQP_URL, "queue": queue}


def _kinesis(p: Props) -> Converted:
    options: dict[str, Any] = {"url": REDIS_URL, "stream": p.need("streamName")}
    p.note(
        "streamName",
        f"Redis at {REDIS_URL} plays Kinesis: stream {options['stream']!r}"
        " (change url, or use url_env)",
    )
    partition_key = p.text("partitionKey")
    if partition_key:
        options["partition_key"] = partition_key
    return "redis_stream", options


def _cloudwatch_logs(p: Props) -> Converted:
    p.note("logGroupName", f"rulebus's own log instead of the log group {p.text('logGroupName')!r}")
    return "log", {"level": "info"}


def _none(why: str) -> Callable[[Props], Converted]:
    def skip(p: Props) -> Converted:
        raise Skip(why)

    return skip


ACTIONS: dict[str, Callable[[Props], Converted]] = {
    "dynamoDBv2": _dynamodb_v2,
    "dynamoDB": _dynamodb,
    "s3": _s3,
    "sns": _sns,
    "lambda": _lambda,
    "republish": _republish,
    "http": _http,
    "sqs": _sqs,
    "kinesis": _kinesis,
    "cloudwatchLogs": _cloudwatch_logs,
    "firehose": _none(
        "rulebus has no Firehose: an object action writing one object per event"
        " (key ${id}.json, say) is the nearest"
    ),
    "cloudwatchMetric": _none("rulebus has no CloudWatch metrics action; see GET /metrics"),
    "cloudwatchAlarm": _none("rulebus has no CloudWatch alarms"),
    "iotAnalytics": _none("rulebus has no IoT Analytics: a table action keeps the messages"),
    "iotEvents": _none("rulebus has no IoT Events: a function can keep the detector's state"),
    "iotSiteWise": _none("rulebus has no IoT SiteWise"),
    "stepFunctions": _none("rulebus has no Step Functions: a function action is the nearest"),
    "timestream": _none("rulebus has no Timestream: a table action keeps the records"),
    "elasticsearch": _none("rulebus has no OpenSearch action: an http action can index"),
    "openSearch": _none("rulebus has no OpenSearch action: an http action can index"),
    "kafka": _none("rulebus has no Kafka action: redis_stream, amqp or nats carry a stream"),
    "location": _none("rulebus has no Amazon Location action"),
    "salesforce": _none("rulebus has no Salesforce action: an http action can post to it"),
}
