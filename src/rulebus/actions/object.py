"""``object``: put the rule's output as a JSON object into a bucket at a ``${}`` key."""

from __future__ import annotations

from collections.abc import Sequence

from rulebus import codec
from rulebus.actions.base import (
    Action,
    Declared,
    Delivery,
    Services,
    in_one_go,
    reference,
    render,
    template_option,
)
from rulebus.actions.registry import register
from rulebus.backends.base import validate_key
from rulebus.config.options import Options, constant_shape
from rulebus.errors import ActionError, BadInput
from rulebus.sql import Template


@register
class ObjectAction(Action):
    """Options: ``bucket`` (a declared bucket) and ``key`` (a ``${}`` template)."""

    kind = "object"

    def __init__(self, bucket: str, key: Template) -> None:
        self.bucket = bucket
        self.resource = bucket
        self.key = key

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> Action:
        bucket = reference(opts, "bucket", declared.buckets, "bucket")
        key = template_option(opts, "key")
        assert key is not None
        shape = constant_shape(opts.value["key"])
        try:
            validate_key(shape)
        except BadInput as exc:
            opts.fail("key", exc.message.replace(repr(shape), repr(opts.value["key"])))
        return cls(bucket, key)

    async def run_many(
        self, deliveries: Sequence[Delivery], index: int, services: Services
    ) -> list[Exception | None]:
        return await in_one_go(
            deliveries,
            lambda d: (self.object_key(d), codec.dumps(d.output)),
            lambda objects: services.objects.put_many(self.bucket, objects),
        )

    def object_key(self, delivery: Delivery) -> str:
        key = render(self.key, delivery, "object key")
        try:
            return validate_key(key)
        except BadInput as exc:
            raise ActionError(exc.message, retryable=False) from None
