"""CloudFormation and SAM templates read with the line of every value.

Short-form tags (``!Ref X``, ``!Sub ...``, ``!GetAtt A.B``) become their long
forms (``{"Ref": "X"}``, ``{"Fn::Sub": ...}``, ``{"Fn::GetAtt": ["A", "B"]}``),
so the converter sees one shape. JSON templates are read by the same YAML
parser (JSON is YAML), which is what gives them line numbers too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rulebus.config.source import Path_, Source, _Loader, read_text
from rulebus.errors import TemplateError

# Short forms whose scalar argument is a list written with dots (``!GetAtt A.B``).
_DOTTED = {"Fn::GetAtt"}


@dataclass
class Template:
    """One input file: a CloudFormation/SAM template, or what ``aws iot get-topic-rule`` prints."""

    source: Source

    @property
    def file(self) -> str:
        return self.source.file

    def line(self, path: Path_) -> int | None:
        return self.source.line(path)

    @property
    def is_topic_rule(self) -> bool:
        data = self.source.data
        return isinstance(data.get("rule"), dict) and ("ruleArn" in data or "sql" in data["rule"])


def read_template(path: Path) -> Template:
    """Parse ``path``; raises TemplateError (file, line) if it is not a template."""
    file = str(path)
    text = read_text(path)
    if text.lstrip().startswith(("{", "[")):
        # JSON strings cannot hold a raw tab, so every tab is indentation, which YAML refuses.
        text = text.replace("\t", " ")
    source = Source(file, None)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        source.data = None if node is None else _Builder(loader, source).build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise TemplateError(
            f"invalid YAML: {exc.problem or exc.context or 'cannot parse'}",
            file=file,
            line=None if mark is None else mark.line + 1,
            key="",
        ) from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"invalid YAML: {exc}", file=file, line=None, key="") from None
    finally:
        loader.dispose()
    template = Template(source)
    data = source.data
    if not isinstance(data, dict) or not (
        isinstance(data.get("Resources"), dict) or template.is_topic_rule
    ):
        raise TemplateError(
            "not a CloudFormation or SAM template (no Resources mapping), nor the JSON"
            " of aws iot get-topic-rule",
            file=file,
            line=source.line(()),
            key="",
        )
    return template


class _Builder:
    def __init__(self, loader: _Loader, source: Source) -> None:
        self.loader = loader
        self.source = source

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.source.lines[path] = node.start_mark.line + 1
        if not node.tag.startswith("!"):
            if isinstance(node, yaml.ScalarNode):
                return self.loader.construct_object(node)
            return self.collection(node, path)
        name = _long(node.tag[1:])
        self.source.lines[(*path, name)] = node.start_mark.line + 1
        if not isinstance(node, yaml.ScalarNode):
            return {name: self.collection(node, (*path, name))}
        if name in _DOTTED:
            return {name: str(node.value).split(".", 1)}
        return {name: str(node.value)}

    def collection(self, node: yaml.Node, path: Path_) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise TemplateError(
                    "keys must be plain strings",
                    file=self.source.file,
                    line=key_node.start_mark.line + 1,
                    key="",
                )
            key = str(key_node.value)
            out[key] = self.build(value_node, (*path, key))
            self.source.lines[(*path, key)] = key_node.start_mark.line + 1
        return out


def _long(short: str) -> str:
    return "Ref" if short == "Ref" else f"Fn::{short}"
