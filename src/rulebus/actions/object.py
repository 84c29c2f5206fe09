"""``object``: put the rule's output as a JSON object into a bucket at a ``${}`` key."""

from __future__ import annotations

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
from rulebus.sql import EvalContext, Template
from rulebus.template.options import Options


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
        if key.is_constant:
            try:
                validate_key(key.render({}, EvalContext(topic="")))
            except BadInput as exc:
                opts.fail("key", exc.message)
        return cls(bucket, key)

    async def run(self, delivery: Delivery, index: int, services: Services) -> None:
        key = render(self.key, delivery, "object key")
        try:
            validate_key(key)
        except BadInput as exc:
            raise ActionError(exc.message, retryable=False) from None
        await services.objects.put(self.bucket, key, codec.dumps(delivery.output))
