"""The console's Architecture page: the running app drawn as ``rulebus graph`` draws it."""

from __future__ import annotations

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from rulebus.console.session import Session
from rulebus.console.web import Console, Page
from rulebus.graph import app_graph, to_mermaid, to_svg


def architecture_page(console: Console) -> Page:
    async def architecture(request: Request, session: Session) -> Response:
        # The app as loaded now, so the drawing follows a reload.
        graph = app_graph(console.runtime.app)
        return console.render(
            "architecture.html",
            session,
            name=graph.name,
            # to_svg escapes every name it draws: the picture goes in as markup.
            svg=Markup(to_svg(graph)),
            mermaid=to_mermaid(graph),
        )

    return architecture
