"""The app folder: rulebus.yaml, a stub per function, and IMPORT-REPORT.md.

The app file is written by hand rather than by ``yaml.dump`` so that it reads
like the examples (flow style for small mappings, SQL as a block) and can carry
comments; the same draft always gives the same bytes.
"""

from __future__ import annotations

from typing import Any

import yaml

from rulebus.importers.aws.draft import Draft, Stub

UNPORTED = "RULEBUS_UNPORTED"


def app_file(draft: Draft, files: list[str]) -> str:
    data: dict[str, Any] = {"name": draft.name}
    if draft.tables:
        data["tables"] = {name: {"key": key} for name, key in draft.tables.items()}
    if draft.buckets:
        data["buckets"] = list(draft.buckets)
    if draft.notifications:
        data["notifications"] = {
            name: {"subscribers": subscribers} for name, subscribers in draft.notifications.items()
        }
    if draft.functions:
        data["functions"] = {name: _function(stub) for name, stub in draft.functions.items()}
    data["rules"] = draft.rules
    if draft.routes:
        data["api"] = {"routes": draft.routes}
    comments: dict[tuple[str, ...], list[str]] = {
        ("rules", name): lines for name, lines in draft.notes.items()
    }
    lines = [
        f"# Made by `rulebus import aws` from {', '.join(files)}.",
        "# IMPORT-REPORT.md says what became of each resource, and what changed on the way.",
    ]
    _mapping(data, 0, (), comments, lines)
    return "\n".join(lines) + "\n"


def _function(stub: Stub) -> dict[str, Any]:
    spec: dict[str, Any] = {"handler": f"functions.{stub.module}:handler"}
    if stub.timeout is not None:
        spec["timeout"] = f"{stub.timeout:g}s"
    return spec


def stub_file(stub: Stub) -> str:
    rules = ", ".join(sorted(set(stub.rules))) or "none"
    code = f" (code: {stub.code})" if stub.code else ""
    return f'''"""Function {stub.name}, imported by `rulebus import aws` from {stub.where}.

On AWS Lambda it ran as {stub.runtime}, handler {stub.handler}{code}.
Rules that call it: {rules}.

Port its code here: ``handler(event, ctx)`` gets the rule's output, and
``ctx.publish(topic, payload)`` publishes an event (docs/app-file.md#functions).
Then delete {UNPORTED}: `rulebus check` warns about this file while it is here.
"""

from typing import Any

from rulebus.errors import ActionError

{UNPORTED} = True

ORIGINAL = {{"function": {stub.name!r}, "runtime": {stub.runtime!r}, "handler": {stub.handler!r}}}


def handler(event: Any, ctx: Any) -> None:
    raise ActionError(
        "function {stub.name} is not ported to Python yet (it was {stub.runtime}, {stub.handler})",
        retryable=False,
    )
'''


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(
        value, default_flow_style=True, width=1 << 30, allow_unicode=True, sort_keys=False
    )
    return text.removesuffix("\n...\n").rstrip("\n")


def _flat(value: Any) -> bool:
    if isinstance(value, dict | list):
        items = value.values() if isinstance(value, dict) else value
        return all(not isinstance(v, dict | list) and not _multiline(v) for v in items)
    return True


def _multiline(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value.strip()


def _mapping(
    data: dict[str, Any],
    indent: int,
    path: tuple[str, ...],
    comments: dict[tuple[str, ...], list[str]],
    out: list[str],
) -> None:
    pad = "  " * indent
    for key, value in data.items():
        out += [f"{pad}# {line}".rstrip() for line in comments.get((*path, key), [])]
        head = f"{pad}{_scalar(key)}:"
        if _multiline(value):
            out.append(f"{head} |")
            out += [f"{pad}  {line}".rstrip() for line in value.strip().splitlines()]
        elif _flat(value):
            out.append(f"{head} {_scalar(value)}")
        elif isinstance(value, dict):
            out.append(head)
            _mapping(value, indent + 1, (*path, key), comments, out)
        else:
            out.append(head)
            for item in value:
                if isinstance(item, dict) and item:
                    block: list[str] = []
                    _mapping(item, indent + 2, (), {}, block)
                    first = block[0]
                    block[0] = f"{pad}  - {first.lstrip()}"
                    out += block
                else:
                    out.append(f"{pad}  - {_scalar(item)}")
