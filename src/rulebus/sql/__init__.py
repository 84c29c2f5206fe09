"""Rules SQL: the AWS IoT SQL dialect, compiled once into Python closures.

>>> from rulebus.sql import compile_rule, EvalContext
>>> rule = compile_rule("SELECT * FROM 'event/+' WHERE price > 100")
>>> rule.topic_filter.matches("event/buy")
True
>>> rule.evaluate({"price": 123.45}, EvalContext(topic="event/buy"))
{'price': 123.45}
"""

from rulebus.sql.context import NO_MATCH, EvalContext
from rulebus.sql.rule import Rule, compile_rule
from rulebus.sql.templates import Template, compile_template
from rulebus.sql.topics import TopicFilter, validate_topic
from rulebus.sql.versions import DEFAULT_SQL_VERSION, SQL_VERSIONS

__all__ = [
    "DEFAULT_SQL_VERSION",
    "NO_MATCH",
    "SQL_VERSIONS",
    "EvalContext",
    "Rule",
    "Template",
    "TopicFilter",
    "compile_rule",
    "compile_template",
    "validate_topic",
]
