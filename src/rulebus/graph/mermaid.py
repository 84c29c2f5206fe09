"""The graph as a Mermaid flowchart, for Markdown pages that render Mermaid."""

from __future__ import annotations

from rulebus.graph.model import Graph

# Opening and closing brackets of each kind's shape.
_SHAPES = {
    "route": ("([", "])"),
    "mqtt": ("([", "])"),
    "topic": ("(", ")"),
    "filter": ("(", ")"),
    "republish": ("(", ")"),
    "rule": ("[", "]"),
    "action": ("[", "]"),
    "table": ("[(", ")]"),
    "bucket": ("[(", ")]"),
    "function": ("[[", "]]"),
    "notification": (">", "]"),
}
_ARROWS = {"solid": "-->", "error": "-.->|error|", "may": "-.->"}

# Mermaid reads '#…;' as an entity and '"' ends the label; the rest would be HTML.
_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "`": "#96;"}


def to_mermaid(graph: Graph) -> str:
    lines = ["flowchart LR"]
    for node in graph.nodes:
        opening, closing = _SHAPES.get(node.kind, ("[", "]"))
        label = f"{_escape(node.caption)}<br/>{_escape(node.label)}"
        lines.append(f'  {node.id}{opening}"{label}"{closing}')
    for edge in graph.edges:
        lines.append(f"  {edge.source} {_ARROWS[edge.style]} {edge.target}")
    disabled = [node.id for node in graph.nodes if node.disabled]
    if disabled:
        lines.append("  classDef disabled fill:#eee,stroke:#aaa,color:#999")
        lines.append(f"  class {','.join(disabled)} disabled")
        links = [str(i) for i, edge in enumerate(graph.edges) if edge.disabled]
        lines.append(f"  linkStyle {','.join(links)} stroke:#bbb")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in " ".join(text.split()))
