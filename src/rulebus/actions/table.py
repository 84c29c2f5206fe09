"""``table``: put the rule's output into a table, keyed by the table's key fields."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rulebus.actions.base import (
    Action,
    Declared,
    Delivery,
    Services,
    in_one_go,
    reference,
    render,
    template_option,
)
from rulebus.actions.registry import register
from rulebus.config.options import Options
from rulebus.errors import ActionError
from rulebus.sql import Template

_KEY_TYPES = ("string", "number")


@dataclass(frozen=True)
class KeyTemplate:
    """A key field whose value a template renders, as text or as a number."""

    field: str
    template: Template
    number: bool = False

    def render(self, delivery: Delivery) -> str | int | float:
        text = render(self.template, delivery, f"key field {self.field!r}")
        if not self.number:
            return text
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ActionError(
                f"key field {self.field!r} is a number, and rendered {text!r}", retryable=False
            )
        return value


@register
class TableAction(Action):
    """Options: ``name`` (a declared table) and optional ``key``: field -> ``${}`` template.

    Key fields without a template are taken from the output, so the same
    event always lands on the same row and retries never add a second one:
    the output is the item, as AWS IoT's DynamoDBv2 action writes it. With
    ``hash_key_field`` (and ``range_key_field``) the item is built as AWS
    IoT's DynamoDB action builds it: the key fields from templates, and the
    output under ``payload_field``.
    """

    kind = "table"

    def __init__(
        self, table: str, keys: tuple[KeyTemplate, ...], payload_field: str | None = None
    ) -> None:
        self.table = table
        self.resource = table
        self.keys = keys
        self.payload_field = payload_field

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> Action:
        table = reference(opts, "name", declared.tables, "table")
        if opts.has("hash_key_field"):
            return cls._dynamodb(opts, table, declared.tables[table])
        dynamodb = ("hash_key_value", "hash_key_type", "range_key_field", "range_key_value")
        for key in (*dynamodb, "range_key_type", "payload_field"):
            if opts.has(key):
                opts.fail(key, "goes with hash_key_field (AWS's DynamoDB item shape)")
        key_opts = opts.section("key")
        keys = []
        for field in key_opts.value:
            if field not in declared.tables[table]:
                key_opts.fail(field, f"{field!r} is not a key field of table {table!r}")
            template = template_option(key_opts, field)
            assert template is not None
            keys.append(KeyTemplate(field, template))
        key_opts.done()
        return cls(table, tuple(keys))

    @classmethod
    def _dynamodb(cls, opts: Options, table: str, declared_key: tuple[str, ...]) -> Action:
        """AWS's DynamoDB (v1) options: the key fields must be the table's key, in order."""
        if opts.has("key"):
            opts.fail("key", "give either key or hash_key_field (with hash_key_value), not both")
        keys = []
        for position, part in enumerate(("hash", "range")):
            field_key = f"{part}_key_field"
            if not opts.has(field_key):
                for other in (f"{part}_key_value", f"{part}_key_type"):
                    if opts.has(other):
                        opts.fail(other, f"goes with {field_key}")
                continue
            field = opts.text(field_key, required=True)
            if position >= len(declared_key) or declared_key[position] != field:
                opts.fail(
                    field_key,
                    f"table {table!r} has key {list(declared_key)}: its {part} key"
                    f" is {_nth(declared_key, position)}, not {field!r}",
                )
            template = template_option(opts, f"{part}_key_value")
            assert template is not None
            kind = opts.text(f"{part}_key_type", "string").lower()
            if kind not in _KEY_TYPES:
                opts.fail(f"{part}_key_type", f"expected STRING or NUMBER, got {kind!r}")
            keys.append(KeyTemplate(field, template, number=kind == "number"))
        if len(keys) != len(declared_key):
            missing = declared_key[len(keys)]
            opts.fail(
                "hash_key_field",
                f"table {table!r} has key {list(declared_key)}:"
                f" give range_key_field: {missing} and range_key_value too",
            )
        payload_field = opts.text("payload_field", "payload")
        if payload_field in declared_key:
            opts.fail("payload_field", f"{payload_field!r} is a key field of table {table!r}")
        return cls(table, tuple(keys), payload_field)

    async def run_many(
        self, deliveries: Sequence[Delivery], index: int, services: Services
    ) -> list[Exception | None]:
        return await in_one_go(
            deliveries, self.item, lambda items: services.tables.put_many(self.table, items)
        )

    def item(self, delivery: Delivery) -> dict[str, Any]:
        """The row for a delivery: its output plus the key fields from templates, or
        (DynamoDB v1) the key fields and the output under ``payload_field``."""
        output = delivery.output
        if self.payload_field is not None:
            item = {key.field: key.render(delivery) for key in self.keys}
            item[self.payload_field] = output
            return item
        if not isinstance(output, dict):
            raise ActionError(
                f"table {self.table!r} takes an object, the rule produced {type(output).__name__}",
                retryable=False,
            )
        if self.keys:
            output = dict(output)
            for key in self.keys:
                output[key.field] = key.render(delivery)
        return output


def _nth(key: tuple[str, ...], position: int) -> str:
    return repr(key[position]) if position < len(key) else "not declared"
