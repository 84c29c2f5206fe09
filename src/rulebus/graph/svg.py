"""The graph as an SVG picture, laid out here (no Graphviz): one column per kind of box,
left to right, each box level with the boxes that lead to it where there is room."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from html import escape

from rulebus.graph.model import TARGET, Edge, Graph, Node

CHAR = 7.25  # px: the width of a character of a 12 px monospace font, rounded up
PAD = 10
HEIGHT = 40  # of a box
ROW_GAP = 14
COLUMN_GAP = 64
MARGIN = 16
LANE = 10  # px between the lanes of arrows that go back left, under the boxes
LONGEST = 48  # characters of a label shown; the whole of it is in the box's tooltip

_SOURCES = ("route", "mqtt")
_TOPICS = ("topic", "filter", "republish")
_RULES = ("rule",)
_ACTIONS = ("action",)
# Fill and stroke per kind; everything else is a target (table, bucket...).
_COLOURS = {
    **dict.fromkeys(_SOURCES, ("#e8f0fe", "#4a6fa5")),
    **dict.fromkeys(_TOPICS, ("#fff8e1", "#b08900")),
    **dict.fromkeys(_RULES, ("#e6f4ea", "#2e7d32")),
    **dict.fromkeys(_ACTIONS, ("#f3e5f5", "#7b1fa2")),
}
_TARGET = ("#e0f7fa", "#00838f")
_DISABLED = ("#f2f2f2", "#aaaaaa")
_LINES = {"solid": ("#555555", ""), "error": ("#c62828", "6 4"), "may": ("#555555", "2 3")}
_OFF = "#bbbbbb"


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    column: int

    @property
    def middle(self) -> int:
        return self.y + HEIGHT // 2


def to_svg(graph: Graph) -> str:
    boxes = layout(graph)
    backs = sum(_goes_back(e, boxes) for e in graph.edges)
    right = max((b.x + b.width for b in boxes.values()), default=0)
    width = right + (COLUMN_GAP // 2 if backs else 0) + MARGIN
    bottom = max((b.y + HEIGHT for b in boxes.values()), default=0)
    height = bottom + LANE * (backs + 1) + MARGIN
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="ui-monospace, Menlo, Consolas,'
        ' monospace" font-size="12" role="img">',
        f"<title>{escape(f'rulebus app {graph.name}')}</title>",
        "<defs>",
        *(_marker(colour) for colour in sorted({c for c, _ in _LINES.values()} | {_OFF})),
        "</defs>",
    ]
    back = 0
    for edge in graph.edges:
        source, target = boxes[edge.source], boxes[edge.target]
        if _goes_back(edge, boxes):
            back += 1
            out.append(_line(edge, _back(source, target, bottom + back * LANE, _offset(back))))
        else:
            out.append(_line(edge, _forward(source, target)))
    for node in graph.nodes:
        out.append(_box(node, boxes[node.id]))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def layout(graph: Graph) -> dict[str, Box]:
    """Where each node's box goes, by node id.

    Left to right, each box goes level with the boxes that lead to it, as high
    as there is room; then right to left, each moves down to the middle of the
    boxes it leads to, if that leaves room for the box under it.
    """
    before: dict[str, list[str]] = defaultdict(list)
    after: dict[str, list[str]] = defaultdict(list)
    for edge in graph.edges:
        before[edge.target].append(edge.source)
        after[edge.source].append(edge.target)
    boxes: dict[str, Box] = {}
    columns: list[list[str]] = []  # node ids, top to bottom
    x = MARGIN
    for column in sorted({n.column for n in graph.nodes}):
        nodes = [n for n in graph.nodes if n.column == column]
        width = max(_width(n) for n in nodes)
        wanted = {n.id: _middle(before[n.id], boxes, range(column)) for n in nodes}
        # Boxes fed from the left in the order of what feeds them, the others after.
        order = sorted(
            range(len(nodes)),
            key=lambda i: (wanted[nodes[i].id] is None, wanted[nodes[i].id] or 0, i),
        )
        columns.append([nodes[i].id for i in order])
        y = MARGIN
        for node_id in columns[-1]:
            middle = wanted[node_id]
            top = y if middle is None else max(y, middle - HEIGHT // 2)
            boxes[node_id] = Box(x, top, width, column)
            y = top + HEIGHT + ROW_GAP
        x += width + COLUMN_GAP
    for ids in reversed(columns[:-1]):
        below = 1 << 30
        for node_id in reversed(ids):
            box = boxes[node_id]
            middle = _middle(after[node_id], boxes, range(box.column + 1, TARGET + 1))
            if middle is not None:
                top = max(box.y, min(middle - HEIGHT // 2, below - ROW_GAP - HEIGHT))
                box = boxes[node_id] = Box(box.x, top, box.width, box.column)
            below = box.y
    return boxes


def _middle(ids: list[str], boxes: dict[str, Box], columns: range) -> int | None:
    """The middle of the placed boxes among ``ids`` that are in ``columns``."""
    ys = [boxes[i].middle for i in ids if i in boxes and boxes[i].column in columns]
    return sum(ys) // len(ys) if ys else None


def _goes_back(edge: Edge, boxes: dict[str, Box]) -> bool:
    return boxes[edge.target].column <= boxes[edge.source].column


def _width(node: Node) -> int:
    return math.ceil(max(len(node.caption), len(_shown(node.label))) * CHAR) + 2 * PAD


def _shown(label: str) -> str:
    return label if len(label) <= LONGEST else label[: LONGEST - 1] + "…"


def _forward(a: Box, b: Box) -> str:
    x1, y1, x2, y2 = a.x + a.width, a.middle, b.x, b.middle
    bend = (x2 - x1) // 2
    return f"M{x1} {y1} C{x1 + bend} {y1} {x2 - bend} {y2} {x2} {y2}"


def _offset(back: int) -> int:
    """How far from the boxes the n-th arrow going back left runs up and down."""
    return 10 + (back % 5) * 5  # at most half a gap


def _back(a: Box, b: Box, lane: int, offset: int) -> str:
    # Right of the source, down to a lane under every box, left, and up into the
    # target from its left: the vertical parts run in the gaps between columns.
    out, into = a.x + a.width + offset, b.x - offset
    return f"M{a.x + a.width} {a.middle} H{out} V{lane} H{into} V{b.middle} H{b.x}"


def _line(edge: Edge, path: str) -> str:
    colour, dashes = _LINES[edge.style]
    if edge.disabled:
        colour = _OFF
    dash = f' stroke-dasharray="{dashes}"' if dashes else ""
    return (
        f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.3"{dash}'
        f' marker-end="url(#arrow-{colour[1:]})"/>'
    )


def _marker(colour: str) -> str:
    return (
        f'<marker id="arrow-{colour[1:]}" viewBox="0 0 10 10" refX="10" refY="5"'
        ' markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M0 0 L10 5 L0 10 z" fill="{colour}"/></marker>'
    )


def _box(node: Node, box: Box) -> str:
    fill, stroke = _DISABLED if node.disabled else _COLOURS.get(node.kind, _TARGET)
    text = "#999999" if node.disabled else "#222222"
    rounded = 18 if node.kind in _SOURCES else 8 if node.kind in _TOPICS else 3
    return (
        f'<g class="{node.kind}"><title>{escape(f"{node.caption}: {node.label}")}</title>'
        f'<rect x="{box.x}" y="{box.y}" width="{box.width}" height="{HEIGHT}" rx="{rounded}"'
        f' fill="{fill}" stroke="{stroke}"/>'
        f'<text x="{box.x + PAD}" y="{box.y + 14}" font-size="10" fill="#777777">'
        f"{escape(node.caption)}</text>"
        f'<text x="{box.x + PAD}" y="{box.y + 31}" fill="{text}">'
        f"{escape(_shown(node.label))}</text></g>"
    )
