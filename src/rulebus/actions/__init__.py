"""Actions: what a rule does with its output. One module per kind, registered by name."""

from rulebus.actions import (  # noqa: F401  (registration)
    amqp,
    function,
    http,
    log,
    mqtt,
    nats,
    notify,
    object,
    redis_stream,
    republish,
    table,
)
