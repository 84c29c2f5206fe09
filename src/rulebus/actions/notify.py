"""``notify``: fan the rule's output out to a notification topic's subscribers."""

from __future__ import annotations

from collections.abc import Sequence

from rulebus.actions.base import Action, Declared, Delivery, Services, reference
from rulebus.actions.registry import register
from rulebus.config.options import Options


@register
class NotifyAction(Action):
    """Options: ``topic``, a declared notification topic."""

    kind = "notify"

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.resource = topic

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> Action:
        return cls(reference(opts, "topic", declared.notifications, "notification topic"))

    async def run_many(
        self, deliveries: Sequence[Delivery], index: int, services: Services
    ) -> list[Exception | None]:
        ids = [delivery.derived_id(index) for delivery in deliveries]
        return await services.notifier.notify_many(self.topic, deliveries, ids)
