"""The built-in functions, by group, and the AWS-service functions rulebus refuses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rulebus.sql.versions import V2015


@dataclass(frozen=True, slots=True)
class Function:
    """A built-in function and how the compiler may call it.

    ``pure`` functions give the same result for the same arguments, so calls with
    constant arguments are folded at compile time. ``context`` functions receive
    the :class:`~rulebus.sql.context.EvalContext` as their first argument.
    ``literal_impl``, when set, replaces ``impl`` when the second argument is a
    literal of the rule (the regexp functions trust patterns written in the rule).
    """

    name: str
    impl: Callable[..., Any]
    min_args: int
    max_args: int | None
    since: str = V2015
    pure: bool = True
    context: bool = False
    literal_impl: Callable[..., Any] | None = None


def _registry() -> dict[str, Function]:
    from rulebus.sql.functions import context, encoding, math, misc, regexp, strings, time

    table: dict[str, Function] = {}
    for module in (context, encoding, math, misc, regexp, strings, time):
        for function in module.FUNCTIONS:
            table[function.name] = function
    return table


#: Every built-in function by lower-case name.
FUNCTIONS: dict[str, Function] = _registry()

# Rules have no lookups: a function action can read anything in Python and
# publish the enriched event for a second rule.
_LOOKUP = (
    "look the data up in a function action instead, and publish the enriched event "
    "to a topic that another rule selects from"
)
_CALL = "call it from a function action instead"

#: AWS IoT functions that need an AWS service or AWS-only state, with the rulebus way.
AWS_ONLY: dict[str, str] = {
    "aws_lambda": f"aws_lambda() calls AWS Lambda; {_CALL}",
    "get_dynamodb": f"get_dynamodb() reads DynamoDB; {_LOOKUP}",
    "get_thing_shadow": f"get_thing_shadow() reads an AWS IoT shadow; {_LOOKUP}",
    "get_registry_data": f"get_registry_data() reads the AWS IoT registry; {_LOOKUP}",
    "get_secret": "get_secret() reads AWS Secrets Manager; give the secret to the action "
    "through its configuration instead",
    "machinelearning_predict": f"machinelearning_predict() calls Amazon ML; {_CALL}",
    "accountid": "accountid() returns an AWS account id, which rulebus does not have",
    "get_mqtt_property": "get_mqtt_property() reads MQTT 5 properties, which rulebus "
    "events do not carry",
    "get_user_properties": "get_user_properties() reads MQTT 5 user properties, which "
    "rulebus events do not carry",
}
