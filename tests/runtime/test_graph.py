"""``rulebus graph``: the app drawn from its app file, as Mermaid and SVG, through the CLI."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.runtime.helpers import EXCHANGE, ROOT, cli

SVG = "{http://www.w3.org/2000/svg}"

# A rule's output republished into the filters of two others, one of them
# disabled; a republish topic whose template holds characters that are markup
# in both output formats.
SHOP = """
name: shop
tables:
  orders: {key: [id]}
rules:
  flag:
    sql: SELECT * FROM 'order/new' WHERE total > 1000
    actions:
      - republish: {topic: alert/fraud}
      - republish: {topic: "alert/${concat('<&\\"#', kind)}"}
  archive-fraud:
    sql: SELECT * FROM 'alert/fraud'
    actions:
      - table: {name: orders}
  all-alerts:
    enabled: false
    sql: SELECT * FROM 'alert/#'
    actions:
      - table: {name: orders}
  devices:
    sql: SELECT * FROM 'dev-7/temp'
    actions:
      - table: {name: orders}
  sensors:
    sql: SELECT * FROM 'sensor/temp'
    actions:
      - table: {name: orders}
api:
  routes:
    - path: /order
      topic: order/new
    - path: /reading
      topic: dev-${device}/temp
"""
ODD = "alert/${concat('<&\"#', kind)}"


def mermaid(app: Path) -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    """The boxes (id: "caption label") and arrows (from, arrow, to, by label) of a drawing."""
    result = cli("graph", str(app), check=True)
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    boxes: dict[str, str] = {}
    arrows = set()
    for line in lines[1:]:
        box = re.fullmatch(r'  (\w+)(\(\[|\[\(|\[\[|\(|\[|>)"([^"]*)"(\]\)|\)\]|\]\]|\)|\])', line)
        arrow = re.fullmatch(r"  (\w+) (-->|-\.->|-\.->\|error\|) (\w+)", line)
        style = re.fullmatch(r"  (classDef|class|linkStyle) \S+ \S+", line)
        assert box or arrow or style, f"not a Mermaid line this drawing makes: {line!r}"
        if box:
            caption, label = box.group(3).split("<br/>")
            boxes[box.group(1)] = f"{unescape(caption)} {unescape(label)}"
        if arrow:
            arrows.add((arrow.group(1), arrow.group(2), arrow.group(3)))
    return boxes, {(boxes[a], kind, boxes[b]) for a, kind, b in arrows}


def unescape(label: str) -> str:
    """A Mermaid label as text: it writes # " < > & as entities such as #35;."""
    return re.sub(r"#(\w+);", lambda m: ENTITIES[m.group(1)], label)


ENTITIES = {"35": "#", "quot": '"', "lt": "<", "gt": ">", "amp": "&", "96": "`"}


def svg(app: Path) -> ET.Element:
    return ET.fromstring(cli("graph", str(app), "--format", "svg", check=True).stdout)


def svg_boxes(root: ET.Element) -> dict[str, ET.Element]:
    """The boxes of an SVG drawing by "caption label", as the texts in them say."""
    out = {}
    for group in root.iter(f"{SVG}g"):
        caption, label = (t.text for t in group.iter(f"{SVG}text"))
        out[f"{caption} {label}"] = group
    return out


EXCHANGE_BOXES = {
    "route POST /event, /events",
    "topic event/${type}",
    "topic filter event/+",
    "topic filter event/buy",
    "topic filter alert/fraud",
    "rule archive-events",
    "rule check-buys",
    "rule archive-fraud",
    "action table",
    "action function",
    "action object",
    "action notify",
    "error action log",
    "table events",
    "bucket fraud-archive",
    "notification fraud-alerts",
    "function fraud-check",
}


class TestExchange:
    def test_mermaid_draws_every_part_and_how_they_connect(self) -> None:
        """The exchange's Mermaid holds each route, topic, rule, action and target, linked."""
        boxes, arrows = mermaid(EXCHANGE)
        assert set(boxes.values()) == EXCHANGE_BOXES
        assert list(boxes.values()).count("error action log") == 3
        assert {
            ("route POST /event, /events", "-->", "topic event/${type}"),
            # The route's template gives event/buy for some events only.
            ("topic event/${type}", "-.->", "topic filter event/+"),
            ("topic event/${type}", "-.->", "topic filter event/buy"),
            ("topic filter event/+", "-->", "rule archive-events"),
            ("topic filter event/buy", "-->", "rule check-buys"),
            ("topic filter alert/fraud", "-->", "rule archive-fraud"),
            ("rule archive-events", "-->", "action table"),
            ("action table", "-->", "table events"),
            ("action function", "-->", "function fraud-check"),
            ("action object", "-->", "bucket fraud-archive"),
            ("action notify", "-->", "notification fraud-alerts"),
            ("rule check-buys", "-.->|error|", "error action log"),
        } <= arrows
        # What the function publishes is not in the app file.
        assert not any(a == "function fraud-check" for a, _, _ in arrows)

    def test_svg_is_xml_with_every_part(self) -> None:
        """The SVG parses as XML and has a box for each part, and an arrow per Mermaid arrow."""
        root = svg(EXCHANGE)
        assert root.tag == f"{SVG}svg"
        assert set(svg_boxes(root)) == EXCHANGE_BOXES
        text = cli("graph", str(EXCHANGE), check=True).stdout
        paths = [p for p in root.iter(f"{SVG}path") if p.get("marker-end")]
        assert len(paths) == len(re.findall(r"^  \w+ -", text, re.M)) == 17

    def test_the_docs_drawing_is_what_the_command_draws(self) -> None:
        """docs/exchange.svg is the command's output today, and the output is the same each run."""
        drawn = cli("graph", str(EXCHANGE), "--format", "svg", check=True).stdout
        assert drawn == cli("graph", str(EXCHANGE), "--format", "svg", check=True).stdout
        assert drawn == (ROOT / "docs" / "exchange.svg").read_text()

    def test_output_writes_a_file(self, tmp_path: Path) -> None:
        """--output FILE writes there, nothing to stdout; a .svg name makes SVG."""
        result = cli("graph", str(EXCHANGE), "--output", str(tmp_path / "x.svg"), check=True)
        assert result.stdout == ""
        assert ET.parse(tmp_path / "x.svg").getroot().tag == f"{SVG}svg"
        cli("graph", str(EXCHANGE), "-o", str(tmp_path / "x.md"), check=True)
        assert (tmp_path / "x.md").read_text().startswith("flowchart LR\n")


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    (tmp_path / "rulebus.yaml").write_text(SHOP)
    return tmp_path


class TestRepublishAndTemplates:
    def test_republished_topics_feed_the_rules_that_read_them(self, shop: Path) -> None:
        """A republish topic links to each filter that takes it; a template to those it may."""
        _, arrows = mermaid(shop)
        assert {
            ("action republish", "-->", "republished topic alert/fraud"),
            ("republished topic alert/fraud", "-->", "topic filter alert/fraud"),
            ("republished topic alert/fraud", "-->", "topic filter alert/#"),
            ("topic filter alert/fraud", "-->", "rule archive-fraud"),
        } <= arrows
        # A concrete topic feeds a filter for sure; a template only some of its events.
        assert ("topic order/new", "-->", "topic filter order/new") in arrows
        assert ("topic dev-${device}/temp", "-.->", "topic filter dev-7/temp") in arrows
        assert not any(b == "topic filter sensor/temp" for a, _, b in arrows if "dev-" in a)

    def test_names_are_escaped(self, shop: Path) -> None:
        """Characters that are markup in SVG or Mermaid come out as text, whole."""
        root = svg(shop)
        assert f"republished topic {ODD}" in svg_boxes(root)
        boxes, _ = mermaid(shop)
        assert f"republished topic {ODD}" in boxes.values()
        text = cli("graph", str(shop), check=True).stdout
        assert "alert/${concat('#lt;#amp;#quot;#35;', kind)}" in text
        assert not re.search(r"[<&]", text.replace("<br/>", ""))

    def test_disabled_rules_are_grey(self, shop: Path) -> None:
        """A disabled rule, its action and arrows are drawn grey in both formats."""
        boxes = svg_boxes(svg(shop))
        fills = {name: next(box.iter(f"{SVG}rect")).get("fill") for name, box in boxes.items()}
        assert fills["rule (disabled) all-alerts"] == "#f2f2f2"
        assert fills["rule archive-fraud"] != "#f2f2f2"
        text = cli("graph", str(shop), check=True).stdout
        assert re.search(r"^  class rule_all_alerts,action_all_alerts_0 disabled$", text, re.M)


class TestErrors:
    def test_a_missing_app_folder_is_the_error_check_gives(self, tmp_path: Path) -> None:
        """A bad app folder: the same one line as ``rulebus check``, exit 2."""
        for app in (tmp_path / "nope", tmp_path):
            graph, check = cli("graph", str(app)), cli("check", str(app))
            assert graph.returncode == check.returncode == 2
            assert graph.stderr == check.stderr
            assert graph.stderr.startswith("error: ") and graph.stderr.count("\n") == 1

    def test_an_invalid_app_file_is_the_error_check_gives(self, tmp_path: Path) -> None:
        """An app file with an error: the file, line and key, on one line, exit 2."""
        (tmp_path / "rulebus.yaml").write_text("rules:\n  a:\n    sql: SELECT * FROM\n")
        graph = cli("graph", str(tmp_path))
        assert graph.returncode == 2 and graph.stdout == ""
        assert graph.stderr == cli("check", str(tmp_path)).stderr
        assert graph.stderr.count("\n") == 1 and "rulebus.yaml:3" in graph.stderr

    def test_an_unwritable_output(self, tmp_path: Path) -> None:
        """An --output that cannot be written: one line naming it, exit 1."""
        result = cli("graph", str(EXCHANGE), "-o", str(tmp_path / "no" / "x.svg"))
        assert result.returncode == 1
        assert (
            result.stderr
            == f"error: cannot write {tmp_path / 'no' / 'x.svg'}: No such file or directory\n"
        )
