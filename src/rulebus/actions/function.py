"""``function``: call a user's Python handler with the rule's output."""

from __future__ import annotations

from collections.abc import Sequence

from rulebus.actions.base import Action, Declared, Delivery, Services, reference
from rulebus.actions.registry import register
from rulebus.events import Event
from rulebus.template.options import Options


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

    async def run(self, delivery: Delivery, index: int, services: Services) -> None:
        (error,) = await self.run_many([delivery], index, services)
        if error is not None:
            raise error

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
                publishers.append(i)
                events.extend(
                    delivery_event(delivery, index, n, topic, payload)
                    for n, (topic, payload) in enumerate(result)
                )
        if events:
            # Everything the batch published goes to the bus in one commit; if
            # that fails, every call that published is retried.
            try:
                await services.publish(events)
            except Exception as exc:
                for i in publishers:
                    errors[i] = exc
        return errors


def delivery_event(delivery: Delivery, index: int, n: int, topic: str, payload: object) -> Event:
    """The n-th event a function published, with an id stable across retries."""
    return Event(
        id=delivery.derived_id(index, n),
        topic=topic,
        ts=delivery.event.ts,
        payload=payload,
        client_id=f"rule:{delivery.rule}",
        principal=delivery.event.principal,
    )
