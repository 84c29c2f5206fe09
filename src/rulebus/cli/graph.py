"""``rulebus graph``: the app's architecture, as Mermaid or SVG."""

from __future__ import annotations

from pathlib import Path

import click

from rulebus.cli.run import app_argument
from rulebus.errors import RulebusError
from rulebus.graph import app_graph, to_mermaid, to_svg
from rulebus.template import load_app

RENDERERS = {"mermaid": to_mermaid, "svg": to_svg}


@click.command("graph")
@app_argument
@click.option(
    "--format",
    "output_format",
    type=click.Choice(sorted(RENDERERS)),
    help="mermaid (the default), or svg; an --output FILE ending in .svg makes svg.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the drawing to FILE instead of stdout.",
)
def graph_command(app_dir: Path, output_format: str | None, output: Path | None) -> None:
    """Draw APP: routes, topics, rules, actions and what they write to.

    Mermaid is a `flowchart LR` to paste into Markdown; SVG is a picture laid
    out here. What a function publishes is known only when it runs, so it is
    not drawn.
    """
    if output_format is None:
        output_format = "svg" if output is not None and output.suffix == ".svg" else "mermaid"
    drawing = RENDERERS[output_format](app_graph(load_app(app_dir)))
    if output is None:
        click.echo(drawing, nl=False)
        return
    try:
        output.write_text(drawing, encoding="utf-8")
    except OSError as exc:
        raise RulebusError(f"cannot write {output}: {exc.strerror}") from None
