"""``log``: write the rule's output to the log, one JSON line per delivery."""

from __future__ import annotations

import logging

from rulebus import codec
from rulebus.actions.base import Action, Declared, Delivery, Services
from rulebus.actions.registry import register
from rulebus.config.options import Options

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


@register
class LogAction(Action):
    """Options: ``level`` (debug, info, warning or error; default info)."""

    kind = "log"
    resource = "log"

    def __init__(self, level: int) -> None:
        self.level = level

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> Action:
        name = opts.text("level", "info")
        if name not in _LEVELS:
            opts.fail("level", f"expected one of {', '.join(_LEVELS)}, got {name!r}")
        return cls(_LEVELS[name])

    async def run(self, delivery: Delivery, index: int, services: Services) -> None:
        services.log.log(
            self.level,
            "rule %s event %s topic %s: %s",
            delivery.rule,
            delivery.event.id,
            delivery.event.topic,
            codec.dumps_str(delivery.output),
        )
