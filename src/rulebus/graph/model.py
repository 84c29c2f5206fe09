"""The app's architecture as a graph: what publishes where, which rules listen, what they do.

Built from the app file alone, so it shows what is declared: a function may
publish events too, but what it publishes is known only when it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rulebus.config.options import placeholders
from rulebus.sql import TopicFilter
from rulebus.sql.topics import filters_overlap
from rulebus.template import App

# Columns, left to right: where events come from to what rules do with them.
ROUTE, TOPIC, FILTER, RULE, ACTION, TARGET = range(6)

# What an action writes to, by action kind; the name is the action's resource.
# Other actions (log) write to nothing the app declares.
TARGETS = {
    "table": "table",
    "object": "bucket",
    "notify": "notification",
    "function": "function",
    "republish": "republish",
}
CAPTIONS = {"republish": "republished topic"}

_HOLE = "\x00"  # stands for a ``${…}`` in a topic template's levels


@dataclass(frozen=True)
class Node:
    """A box: ``id`` is unique and safe in any output format; ``label`` is user data."""

    id: str
    kind: str
    caption: str
    label: str
    column: int
    disabled: bool = False


@dataclass(frozen=True)
class Edge:
    """An arrow. ``style``: "solid"; "error", to and from an error action; "may", from a
    published topic template to a filter that matches some of the topics it makes."""

    source: str
    target: str
    style: str = "solid"
    disabled: bool = False


@dataclass
class Graph:
    name: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def app_graph(app: App) -> Graph:
    """The drawing of ``app``: routes and MQTT subscriptions → topics → topic filters →
    rules → actions → targets.

    A route's topic template feeds every rule filter that matches some topic it
    can make; a republish action's topic does the same, so one rule's output is
    drawn going into the rules that read it.
    """
    graph = _Builder(app.name)
    filters = {
        rule.compiled.topic_filter.text: rule.compiled.topic_filter for rule in app.rules.values()
    }
    for text in filters:
        graph.node("filter", "topic filter", text, FILTER)
    published: list[tuple[str, str]] = []
    for route in app.routes:
        paths = f"{route.path}, {route.batch_path}" if route.batch_path else route.path
        source = graph.node("route", "route", f"POST {paths}", ROUTE)
        topic = graph.node("topic", "topic", route.topic, TOPIC)
        graph.edge(source, topic)
        published.append((topic, route.topic))
    for sub in app.mqtt.subscriptions if app.mqtt else ():
        source = graph.node("mqtt", "MQTT subscription", f"{sub.broker}: {sub.filter.text}", ROUTE)
        if sub.topic is not None:
            topic = graph.node("topic", "topic", sub.topic, TOPIC)
            graph.edge(source, topic)
            published.append((topic, sub.topic))
            continue
        # Without a mapping the MQTT topic is the event's: it goes to the rules whose
        # filters share topics with the subscription's.
        for text, topic_filter in filters.items():
            if filters_overlap(sub.filter.levels, topic_filter.levels):
                graph.edge(
                    source, graph.ids["filter", text], "solid" if text == sub.filter.text else "may"
                )
    for rule in app.rules.values():
        off = not rule.enabled
        caption = "rule (disabled)" if off else "rule"
        node = graph.node("rule", caption, rule.name, RULE, disabled=off)
        graph.edge(graph.ids["filter", rule.compiled.topic_filter.text], node, disabled=off)
        actions = [(a, "action", "solid") for a in rule.actions]
        if rule.error_action is not None:
            actions.append((rule.error_action, "error action", "error"))
        for i, (action, caption, style) in enumerate(actions):
            step = graph.node(
                "action", caption, action.kind, ACTION, key=f"{rule.name}/{i}", disabled=off
            )
            graph.edge(node, step, style, disabled=off)
            kind = TARGETS.get(action.kind)
            if kind is not None:
                target = graph.node(kind, CAPTIONS.get(kind, kind), action.resource, TARGET)
                graph.edge(step, target, style, disabled=off)
                if kind == "republish":
                    published.append((target, action.resource))
    for source, template in published:
        for text, topic_filter in filters.items():
            if could_match(topic_filter, template):
                # Certain for a constant topic; for a template, true of some events only.
                style = "may" if placeholders(template) else "solid"
                graph.edge(source, graph.ids["filter", text], style, dedupe=True)
    return graph.done()


def could_match(topic_filter: TopicFilter, template: str) -> bool:
    """Whether some topic that ``template`` renders to matches ``topic_filter``.

    Each ``${…}`` is taken to render inside its level: routes enforce that; a
    republish topic could render a '/' too, which is not followed here.
    """
    shape = template
    for expr in placeholders(template):
        shape = shape.replace("${" + expr + "}", _HOLE, 1)
    levels = shape.split("/")
    wanted = topic_filter.levels
    if wanted[-1] == "#":
        wanted = wanted[:-1]
        if len(levels) < len(wanted):
            return False
    elif len(levels) != len(wanted):
        return False
    if wanted and levels[0].startswith("$") and wanted[0] == "+":
        return False  # wildcards do not match $-topics (MQTT 4.7.2)
    return all(
        want == "+" or _could_be(level, want) for want, level in zip(wanted, levels, strict=False)
    )


def _could_be(level: str, literal: str) -> bool:
    if _HOLE not in level:
        return level == literal
    pattern = ".*".join(re.escape(part) for part in level.split(_HOLE))
    return re.fullmatch(pattern, literal, re.DOTALL) is not None


class _Builder:
    def __init__(self, name: str) -> None:
        self.graph = Graph(name)
        self.ids: dict[tuple[str, str], str] = {}
        self._taken: set[str] = set()
        self._edges: set[tuple[str, str]] = set()

    def node(
        self,
        kind: str,
        caption: str,
        label: str,
        column: int,
        *,
        key: str | None = None,
        disabled: bool = False,
    ) -> str:
        """The id of the node of this kind and key (the label unless given), made once."""
        found = self.ids.get((kind, key or label))
        if found is not None:
            return found
        base = kind + "_" + (re.sub(r"[^A-Za-z0-9]+", "_", key or label).strip("_") or "x")
        node_id, n = base, 1
        while node_id in self._taken:
            n += 1
            node_id = f"{base}_{n}"
        self._taken.add(node_id)
        self.ids[kind, key or label] = node_id
        self.graph.nodes.append(Node(node_id, kind, caption, label, column, disabled))
        return node_id

    def done(self) -> Graph:
        """The graph, its nodes and edges in column order (then in the app file's)."""
        column = {node.id: node.column for node in self.graph.nodes}
        self.graph.nodes.sort(key=lambda node: node.column)
        self.graph.edges.sort(key=lambda edge: column[edge.source])
        return self.graph

    def edge(
        self,
        source: str,
        target: str,
        style: str = "solid",
        *,
        disabled: bool = False,
        dedupe: bool = False,
    ) -> None:
        if dedupe and (source, target) in self._edges:
            return
        self._edges.add((source, target))
        self.graph.edges.append(Edge(source, target, style, disabled))
