"""``table``: put the rule's output into a table, keyed by the table's key fields."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rulebus.actions.base import (
    Action,
    Declared,
    Delivery,
    Services,
    in_one_go,
    reference,
    render,
)
from rulebus.actions.registry import register
from rulebus.config.options import Options
from rulebus.errors import ActionError
from rulebus.sql import Template, compile_template


@register
class TableAction(Action):
    """Options: ``name`` (a declared table) and optional ``key``: field -> ``${}`` template.

    Key fields without a template are taken from the output, so the same
    event always lands on the same row and retries never add a second one.
    """

    kind = "table"

    def __init__(self, table: str, keys: dict[str, Template]) -> None:
        self.table = table
        self.resource = table
        self.keys = keys

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> Action:
        table = reference(opts, "name", declared.tables, "table")
        key_opts = opts.section("key")
        keys: dict[str, Template] = {}
        for field in key_opts.value:
            if field not in declared.tables[table]:
                key_opts.fail(field, f"{field!r} is not a key field of table {table!r}")
            text = key_opts.text(field, required=True)
            try:
                keys[field] = compile_template(text)
            except Exception as exc:
                key_opts.fail(field, f"invalid template: {exc}")
        key_opts.done()
        return cls(table, keys)

    async def run_many(
        self, deliveries: Sequence[Delivery], index: int, services: Services
    ) -> list[Exception | None]:
        return await in_one_go(
            deliveries, self.item, lambda items: services.tables.put_many(self.table, items)
        )

    def item(self, delivery: Delivery) -> dict[str, Any]:
        """The row for a delivery: its output plus the key fields from templates."""
        output = delivery.output
        if not isinstance(output, dict):
            raise ActionError(
                f"table {self.table!r} takes an object, the rule produced {type(output).__name__}",
                retryable=False,
            )
        item: dict[str, Any] = output
        if self.keys:
            item = dict(output)
            for field, template in self.keys.items():
                item[field] = render(template, delivery, f"key field {field!r}")
        return item
