"""``republish``: publish the rule's output to a ``${}`` topic."""

from __future__ import annotations

from rulebus import codec
from rulebus.actions.base import (
    Action,
    Declared,
    Delivery,
    Services,
    render,
    template_option,
)
from rulebus.actions.registry import register
from rulebus.config.options import Options, check_topic_template
from rulebus.errors import ActionError, BadInput
from rulebus.sql import Template, validate_topic


@register
class RepublishAction(Action):
    """Options: ``topic``, a ``${}`` template. The new event's id is derived from the
    delivery, so a retried delivery does not publish twice."""

    kind = "republish"

    def __init__(self, topic: Template, text: str) -> None:
        self.topic = topic
        self.resource = text

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> Action:
        topic = template_option(opts, "topic")
        assert topic is not None
        check_topic_template(opts, "topic", opts.value["topic"])
        return cls(topic, opts.value["topic"])

    def publishes_to(self) -> str | None:
        return self.resource if self.topic.is_constant else None

    async def run(self, delivery: Delivery, index: int, services: Services) -> None:
        topic = render(self.topic, delivery, "topic")
        try:
            validate_topic(topic)
        except BadInput as exc:
            raise ActionError(exc.message, retryable=False) from None
        try:
            raw = codec.dumps(delivery.output)
        except codec.EncodeError as exc:
            raise ActionError(f"cannot encode the output: {exc}", retryable=False) from None
        event = delivery.derive(index, 0, topic, delivery.output, raw)
        await services.publish([event])
