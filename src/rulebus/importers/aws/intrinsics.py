"""CloudFormation's intrinsic functions, resolved to the names the app file uses.

``Ref`` and ``Fn::GetAtt`` of a resource give the name the resource has in the
app file (an ARN, a queue URL and a name all come down to it). Parameters take
their ``Default``. Pseudo parameters get placeholder values, each noted in the
report. What needs a deployed stack (``Fn::ImportValue``, conditions, ...)
raises ``Unresolved``.
"""

from __future__ import annotations

import re
from typing import Any

from rulebus.importers.aws.report import Entry

PSEUDO = {
    "AWS::Region": "local",
    "AWS::AccountId": "000000000000",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
}
_SUB = re.compile(r"\$\{([^}]*)\}")


class Unresolved(Exception):
    """A value that needs a deployed stack to be known."""


class Resolver:
    """Resolves intrinsics in the values of one template."""

    def __init__(self, data: dict[str, Any], names: dict[str, str], stack: str) -> None:
        parameters = data.get("Parameters")
        self.parameters = parameters if isinstance(parameters, dict) else {}
        mappings = data.get("Mappings")
        self.mappings = mappings if isinstance(mappings, dict) else {}
        self.names = names
        self.pseudo = {**PSEUDO, "AWS::StackName": stack}

    def resolve(self, value: Any, entry: Entry) -> Any:
        if isinstance(value, list):
            return [self.resolve(item, entry) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(str(arg), entry)
            if key.startswith("Fn::"):
                return self._function(key, arg, entry)
        return {key: self.resolve(item, entry) for key, item in value.items()}

    def text(self, value: Any, entry: Entry) -> str:
        resolved = self.resolve(value, entry)
        if isinstance(resolved, dict | list):
            raise Unresolved(f"expected a string, got {type(resolved).__name__}")
        return str(resolved)

    def ref(self, name: str, entry: Entry) -> Any:
        if name in self.names:
            return self.names[name]
        if name in self.parameters:
            spec = self.parameters[name]
            if not isinstance(spec, dict) or "Default" not in spec:
                raise Unresolved(f"parameter {name} has no Default")
            entry.change(f"parameter {name} takes its Default, {spec['Default']!r}")
            return self.resolve(spec["Default"], entry)
        if name in self.pseudo:
            entry.change(f"{name} is taken as {self.pseudo[name]!r}")
            return self.pseudo[name]
        raise Unresolved(f"Ref to {name}, which is neither a resource nor a parameter here")

    def _function(self, key: str, arg: Any, entry: Entry) -> Any:
        if key == "Fn::Sub":
            return self._sub(arg, entry)
        if key == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else arg
            if isinstance(parts, list) and parts and parts[0] in self.names:
                return self.names[parts[0]]
            raise Unresolved(f"Fn::GetAtt of {arg!r}, which is not a resource here")
        args = self.resolve(arg, entry)
        if key == "Fn::Join" and _shaped(args, str, list):
            return args[0].join(str(item) for item in args[1])
        if key == "Fn::Select" and _shaped(args, (int, str), list):
            index = int(args[0])
            if 0 <= index < len(args[1]):
                return args[1][index]
        if key == "Fn::Split" and _shaped(args, str, str):
            return args[1].split(args[0])
        if key == "Fn::FindInMap" and isinstance(args, list) and len(args) == 3:
            found: Any = self.mappings
            for level in args:
                found = found.get(str(level)) if isinstance(found, dict) else None
            if found is not None:
                return self.resolve(found, entry)
        raise Unresolved(f"{key} is not resolved by rulebus import (it needs a deployed stack)")

    def _sub(self, arg: Any, entry: Entry) -> str:
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
            text, variables = arg[0], arg[1]
        else:
            text, variables = arg, {}
        if not isinstance(text, str):
            raise Unresolved("Fn::Sub needs a string")

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return self.text(variables[name], entry)
            head = name.split(".", 1)[0]
            if head in self.names or name in self.parameters or name in self.pseudo:
                return str(self.ref(head if head in self.names else name, entry))
            # Not a CloudFormation name: an AWS IoT substitution template, such as
            # ${timestamp()}, which rulebus's templates read the same way.
            return match.group(0)

        return _SUB.sub(one, text)


def _shaped(args: Any, first: type | tuple[type, ...], second: type) -> bool:
    return (
        isinstance(args, list)
        and len(args) == 2
        and isinstance(args[0], first)
        and isinstance(args[1], second)
    )
