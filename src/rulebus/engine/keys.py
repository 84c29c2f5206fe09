"""Partition keys: which events must be handled in order, by one engine process.

A rule may declare ``partition_key: ${sensor}``. The loader makes sure that
rules which can match the same topic agree on the template, so an event has
one key at most. Backends spread the log by the key's hash where there is a
key, so events with one key always reach the same engine process in log
order; the engine then runs deliveries of one key one at a time.
"""

from __future__ import annotations

from rulebus.backends.base import Keyer
from rulebus.engine.router import Router
from rulebus.events import Event
from rulebus.sql import EvalContext, Template
from rulebus.template.model import App


def keyer(app: App) -> Keyer | None:
    """The function giving an event's partition key in ``app``, or None if no rule has one."""
    keyed = [r for r in app.rules.values() if r.enabled and r.partition_key is not None]
    if not keyed:
        return None
    router: Router[Template] = Router(
        (rule.compiled.topic_filter.levels, rule.partition_key)
        for rule in keyed
        if rule.partition_key is not None
    )

    def key(event: Event) -> str | None:
        templates = router.match(event.topic)
        if not templates:
            return None
        try:
            return templates[0].render(event.payload, EvalContext(topic=event.topic))
        except Exception:
            # A key that cannot be rendered (a field of the wrong type) is the
            # empty key: the event still goes somewhere fixed, and the rule
            # reports the problem when it renders the key itself.
            return ""

    return key
