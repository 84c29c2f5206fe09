"""``function``: call a user's Python handler with the rule's output."""

from __future__ import annotations

from collections.abc import Sequence

from rulebus.actions.base import Action, Declared, Delivery, Services, reference
from rulebus.actions.registry import register
from rulebus.config.options import Options
from rulebus.errors import ActionError
from rulebus.events import Event


@register
class FunctionAction(Action):
    """Options: ``name``, a declared function. Events it publishes go back to the bus."""

    kind = "function"

    def __init__(self, name: str) -> None:
        self.name = name
        self.resource = name

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> Action:
        return cls(reference(opts, "name", declared.functions, "function"))

    async def run_many(
        self, deliveries: Sequence[Delivery], index: int, services: Services
    ) -> list[Exception | None]:
        results = await services.functions.invoke_many(self.name, deliveries)
        errors: list[Exception | None] = []
        events: list[Event] = []
        publishers = []
        for i, (delivery, result) in enumerate(zip(deliveries, results, strict=True)):
            if isinstance(result, Exception):
                errors.append(result)
                continue
            errors.append(None)
            if result:
                try:
                    events.extend(
                        delivery.derive(index, n, topic, payload, raw)
                        for n, (topic, payload, raw) in enumerate(result)
                    )
                except ActionError as exc:
                    errors[i] = exc
                    continue
                publishers.append(i)
        if events:
            # Everything the batch published goes to the bus in one commit; if
            # that fails, every call that published is retried.
            try:
                await services.publish(events)
            except Exception as exc:
                for i in publishers:
                    errors[i] = exc
        return errors
