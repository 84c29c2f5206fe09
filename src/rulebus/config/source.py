"""YAML that remembers where each value came from.

The loader keeps a map from each value's path (``("rules", "r1", "sql")``) to
its line, so every validation error can name the file, line and key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from rulebus.errors import TemplateError

Path_ = tuple[str | int, ...]


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += part if not out else f".{part}"
    return out or "(top level)"


@dataclass
class Source:
    """A parsed YAML file and the line of every value in it."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def fail(self, path: Path_, message: str) -> NoReturn:
        raise TemplateError(message, file=self.file, line=self.line(path), key=dotted(path))


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML 1.1 without implicit timestamps: ``sql_version: 2016-03-23`` stays a string.

    libyaml's parser when PyYAML has it: the pure-Python one takes seconds for
    an app with thousands of rules.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_text(path: Path) -> str:
    """A UTF-8 file's text; TemplateError naming the file if it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError("file not found", file=str(path), line=None, key="") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read: {exc}", file=str(path), line=None, key="") from None


def read_source(path: Path) -> Source:
    file = str(path)
    text = read_text(path)
    source = Source(file, None)
    loader = None
    try:
        _refuse_aliases(text, source)
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is not None:
            source.data = _build(loader, node, (), source)
        else:
            source.data = {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise TemplateError(
            f"invalid YAML: {problem}", file=file, line=line, key="(yaml)"
        ) from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"invalid YAML: {exc}", file=file, line=None, key="(yaml)") from None
    finally:
        if loader is not None:
            loader.dispose()
    return source


def _refuse_aliases(text: str, source: Source) -> None:
    """Aliases would let a small file expand into a huge one ("billion laughs") or
    refer to itself; app files have no need for them."""
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            raise TemplateError(
                "YAML aliases (*name) are not supported in app files",
                file=source.file,
                line=None if event.start_mark is None else event.start_mark.line + 1,
                key="(yaml)",
            )


def _build(loader: _Loader, node: yaml.Node, path: Path_, source: Source) -> Any:
    source.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                source.lines[path] = key_node.start_mark.line + 1
                source.fail(path, "keys must be plain strings")
            key = str(loader.construct_object(key_node))
            if key in out:
                source.lines[(*path, key)] = key_node.start_mark.line + 1
                source.fail((*path, key), "duplicate key")
            out[key] = _build(loader, value_node, (*path, key), source)
            # A key's line, not its value's: a nested mapping starts a line later.
            source.lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), source) for i, item in enumerate(node.value)]
    return loader.construct_object(node)
