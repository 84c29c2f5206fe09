"""``object``: put the rule's output as a JSON object into a bucket at a ``${}`` key."""

from __future__ import annotations

from collections.abc import Sequence

from rulebus import codec
from rulebus.actions.base import (
    Action,
    Declared,
    Delivery,
    Services,
    reference,
    render,
    template_option,
)
from rulebus.actions.registry import register
from rulebus.backends.fs_objects import validate_key
from rulebus.errors import ActionError, BadInput
from rulebus.sql import Template
from rulebus.template.options import Options, constant_shape


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

    async def run(self, delivery: Delivery, index: int, services: Services) -> None:
        await services.objects.put(
            self.bucket, self.object_key(delivery), codec.dumps(delivery.output)
        )

    async def run_many(
        self, deliveries: Sequence[Delivery], index: int, services: Services
    ) -> list[Exception | None]:
        errors: list[Exception | None] = [None] * len(deliveries)
        objects = []
        positions = []
        for i, delivery in enumerate(deliveries):
            try:
                objects.append((self.object_key(delivery), codec.dumps(delivery.output)))
                positions.append(i)
            except ActionError as exc:
                errors[i] = exc
        for i, error in zip(
            positions, await services.objects.put_many(self.bucket, objects), strict=True
        ):
            errors[i] = error
        return errors

    def object_key(self, delivery: Delivery) -> str:
        key = render(self.key, delivery, "object key")
        try:
            return validate_key(key)
        except BadInput as exc:
            raise ActionError(exc.message, retryable=False) from None
