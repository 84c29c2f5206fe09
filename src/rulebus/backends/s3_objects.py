"""The S3 object store: each app bucket is an S3 bucket (AWS, MinIO or any S3-compatible server).

The URL is ``s3://`` with optional query options:

- ``bucket_prefix``: prepended to every app bucket name to form the S3 bucket
  name, so that deployments sharing an account do not share buckets;
- ``endpoint``: the S3 endpoint, e.g. ``http://minio:9000``;
- ``region``: the region buckets are made in.

Without them, the endpoint, region and credentials come the standard AWS way:
``AWS_ENDPOINT_URL``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from rulebus.backends.base import validate_bucket, validate_key
from rulebus.backends.registry import redact
from rulebus.errors import ActionError, BadInput, NotFound, RulebusError, Unavailable

# Puts in flight at once, over all calls; the connection pool has as many
# connections, so no put waits for one and times out doing so.
MAX_CONCURRENT_PUTS = 32

# What a request to S3 can fail with, besides an answer (ClientError):
# aiobotocore turns most aiohttp errors into botocore ones, not all.
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, OSError)
_REQUEST_ERRORS = (ClientError, *_TRANSPORT_ERRORS)
# Answers that say "later" rather than "no", whatever their status.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
    }
)
_OPTIONS = ("bucket_prefix", "endpoint", "region")

# botocore says at INFO where it found credentials and the endpoint, once
# per client: noise in every engine process's log.
for _name in ("botocore", "aiobotocore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def _answer(exc: ClientError) -> tuple[str, int, str]:
    """The error code, HTTP status and message of an S3 answer."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status), str(error.get("Message", "")) or str(exc)


class S3ObjectStore:
    """The :class:`~rulebus.backends.base.ObjectStore` on S3 buckets."""

    def __init__(
        self,
        url: str,
        *,
        bucket_prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
    ) -> None:
        self.url = redact(url)
        self.bucket_prefix = bucket_prefix
        self._endpoint = endpoint
        self._region = region
        self._client: Any = None
        self._exit = contextlib.AsyncExitStack()
        self._puts = asyncio.Semaphore(MAX_CONCURRENT_PUTS)

    def _configured_endpoint(self) -> str | None:
        # botocore reads these itself; a profile's endpoint_url comes with
        # the profile's own s3 addressing_style.
        return (
            self._endpoint
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )

    @property
    def endpoint(self) -> str:
        """The endpoint in use once open, else the one configured, for messages."""
        if self._client is not None:
            return str(self._client.meta.endpoint_url)
        return self._configured_endpoint() or "the AWS S3 endpoint"

    async def open(self) -> None:
        """Make the client and check that S3 answers it; :class:`Unavailable` if not."""
        config = AioConfig(
            # An S3 outage fails a put within seconds rather than minutes:
            # the engine retries the delivery later, with longer waits.
            connect_timeout=3,
            read_timeout=30,
            retries={"mode": "standard", "total_max_attempts": 3},
            max_pool_connections=MAX_CONCURRENT_PUTS,
            # MinIO and the like are not reachable as <bucket>.<host>.
            s3={"addressing_style": "path"} if self._configured_endpoint() else None,
        )
        try:
            self._client = await self._exit.enter_async_context(
                get_session().create_client(
                    "s3",
                    endpoint_url=self._endpoint,
                    # botocore reads AWS_DEFAULT_REGION, not AWS_REGION, which
                    # newer SDKs prefer.
                    region_name=self._region or os.environ.get("AWS_REGION") or None,
                    config=config,
                )
            )
            await self._client.list_buckets(MaxBuckets=1)
        except ClientError as exc:
            code, _, message = _answer(exc)
            # Allowed in but not to list buckets: enough to use our own.
            if code != "AccessDenied":
                await self._fail_open(f"{code}: {message}")
        except _TRANSPORT_ERRORS as exc:
            await self._fail_open(str(exc))

    async def _fail_open(self, reason: str) -> NoReturn:
        endpoint = self.endpoint
        await self.close()
        raise Unavailable("objects", self.url, f"S3 at {endpoint}: {reason}")

    async def close(self) -> None:
        self._client = None
        await self._exit.aclose()

    def _s3_bucket(self, bucket: str) -> str:
        return validate_bucket(self.bucket_prefix + validate_bucket(bucket))

    def _no_bucket(self, bucket: str) -> NotFound:
        s3_name = self.bucket_prefix + bucket
        where = f" (S3 bucket {s3_name!r})" if s3_name != bucket else ""
        return NotFound(f"no bucket named {bucket!r}{where}")

    def _failure(self, exc: Exception, bucket: str, doing: str) -> RulebusError:
        """What a failed request means: ``doing`` says what it was for."""
        what = f"cannot {doing}"
        if not isinstance(exc, ClientError):
            return ActionError(f"{what}: S3 at {self.endpoint}: {exc}", retryable=True)
        code, status, message = _answer(exc)
        if code == "NoSuchBucket":
            return self._no_bucket(bucket)
        retryable = status >= 500 or status == 429 or code in _TRANSIENT_CODES
        return ActionError(f"{what}: {code}: {message}", retryable=retryable)

    async def create_bucket(self, name: str) -> None:
        """Make the S3 bucket unless it is ours already; :class:`Unavailable` if S3 refuses."""
        s3_name = self._s3_bucket(name)
        params: dict[str, Any] = {"Bucket": s3_name}
        region = self._client.meta.region_name
        if region not in (None, "us-east-1", "aws-global"):
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await self._client.create_bucket(**params)
        except ClientError as exc:
            code, _, message = _answer(exc)
            if code == "BucketAlreadyOwnedByYou":
                return
            # Some servers say this of our own bucket too; ours if we may use it.
            if code == "BucketAlreadyExists" and await self._may_use(s3_name):
                return
            reason = f"cannot create bucket {s3_name!r}: {code}: {message}"
            raise Unavailable("objects", self.url, reason) from None
        except _TRANSPORT_ERRORS as exc:
            reason = f"cannot create bucket {s3_name!r} at {self.endpoint}: {exc}"
            raise Unavailable("objects", self.url, reason) from None

    async def _may_use(self, s3_name: str) -> bool:
        try:
            await self._client.head_bucket(Bucket=s3_name)
        except ClientError:
            return False
        return True

    async def put(self, bucket: str, key: str, body: bytes) -> None:
        s3_name = self._s3_bucket(bucket)
        validate_key(key)
        async with self._puts:
            try:
                await self._client.put_object(Bucket=s3_name, Key=key, Body=body)
            except _REQUEST_ERRORS as exc:
                doing = f"put object {key!r} in bucket {bucket!r}"
                raise self._failure(exc, bucket, doing) from exc

    async def put_many(
        self, bucket: str, objects: Sequence[tuple[str, bytes]]
    ) -> list[Exception | None]:
        async def one(key: str, body: bytes) -> Exception | None:
            try:
                await self.put(bucket, key, body)
            except Exception as exc:
                return exc
            return None

        return list(await asyncio.gather(*(one(key, body) for key, body in objects)))

    async def flush(self) -> None:
        # Nothing to do: S3 answers a PUT with 200 only once the object is
        # stored durably, and put returns only after that answer.
        return

    async def get(self, bucket: str, key: str) -> bytes:
        s3_name = self._s3_bucket(bucket)
        validate_key(key)
        try:
            response = await self._client.get_object(Bucket=s3_name, Key=key)
            async with response["Body"] as stream:
                return bytes(await stream.read())
        except _REQUEST_ERRORS as exc:
            if isinstance(exc, ClientError) and _answer(exc)[0] == "NoSuchKey":
                raise NotFound(f"no object {key!r} in bucket {bucket!r}") from None
            raise self._failure(exc, bucket, f"get object {key!r} in bucket {bucket!r}") from exc

    async def list(self, bucket: str, prefix: str = "") -> AsyncIterator[str]:
        s3_name = self._s3_bucket(bucket)
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=s3_name, Prefix=prefix
        )
        try:
            async for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"]
        except _REQUEST_ERRORS as exc:
            raise self._failure(exc, bucket, f"list bucket {bucket!r}") from exc


def from_url(url: str, data_dir: Path, **options: Any) -> S3ObjectStore:
    """``s3://?bucket_prefix=…&endpoint=…&region=…``; ``data_dir`` holds nothing of it."""
    parts = urlsplit(url if "://" in url else f"{url}://")
    if parts.netloc or parts.path:
        raise RulebusError(
            f"--objects {redact(url)}: the S3 URL takes options only, "
            "e.g. s3://?endpoint=http://minio:9000&bucket_prefix=prod-"
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(_OPTIONS))
    if unknown:
        raise RulebusError(
            f"--objects {redact(url)}: unknown option {', '.join(unknown)} "
            f"(known: {', '.join(_OPTIONS)})"
        )
    prefix = query.get("bucket_prefix", "")
    try:
        # The shortest app bucket name must still make a valid S3 name.
        validate_bucket(prefix + "abc")
    except BadInput:
        raise RulebusError(
            f"--objects {redact(url)}: bucket_prefix {prefix!r} cannot start a bucket name: "
            "use lowercase letters, digits, '.' and '-', at most 60 of them"
        ) from None
    return S3ObjectStore(
        url,
        bucket_prefix=prefix,
        endpoint=query.get("endpoint") or None,
        region=query.get("region") or None,
    )
