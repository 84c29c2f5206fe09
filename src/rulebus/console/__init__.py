"""The web console at ``/console``: server-rendered pages over the API process's runtime.

Every page needs a session made by logging in with an API key that holds
the ``admin`` scope (``session``); forms that change something also need
the session's CSRF token. The static files are public.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from rulebus.api.auth import Authenticator
from rulebus.console.architecture import architecture_page
from rulebus.console.changes import Changes
from rulebus.console.login import login_page, logout
from rulebus.console.pages import Pages
from rulebus.console.tail import tail_stream
from rulebus.console.web import PREFIX, Console

if TYPE_CHECKING:
    from rulebus.runtime import Runtime


def console_routes(runtime: Runtime, auth: Authenticator) -> list[BaseRoute]:
    console = Console(runtime, auth)
    pages = Pages(console)
    changes = Changes(console)
    page = console.page
    routes: list[tuple[str, Any, list[str]]] = [
        ("", page(pages.overview), ["GET"]),
        ("/rules", page(pages.rules), ["GET"]),
        ("/rules/{name}/enabled", page(changes.set_enabled, changes=True), ["POST"]),
        ("/sql", page(pages.sql), ["GET", "POST"]),
        ("/sql/send", page(changes.send, changes=True), ["POST"]),
        ("/events", page(pages.events), ["GET"]),
        ("/events/{id}", page(pages.event), ["GET"]),
        ("/tables", page(pages.tables), ["GET"]),
        ("/tables/{name}", page(pages.table), ["GET"]),
        ("/buckets/{name}", page(pages.bucket), ["GET"]),
        ("/buckets/{name}/object", page(pages.object), ["GET"]),
        ("/dead-letters", page(pages.dead_letters), ["GET"]),
        ("/dead-letters/redrive", page(changes.redrive, changes=True), ["POST"]),
        ("/dead-letters/purge", page(changes.purge, changes=True), ["POST"]),
        ("/tail", page(pages.tail), ["GET"]),
        ("/tail/stream", page(tail_stream(console)), ["GET"]),
        ("/architecture", page(architecture_page(console)), ["GET"]),
        ("/login", login_page(console), ["GET", "POST"]),
        ("/logout", page(logout(console), changes=True), ["POST"]),
    ]
    return [
        *(Route(PREFIX + path, endpoint, methods=methods) for path, endpoint, methods in routes),
        Mount(
            PREFIX + "/static",
            StaticFiles(packages=[("rulebus.console", "static")]),
            name="console-static",
        ),
    ]
