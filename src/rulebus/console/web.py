"""What every console page shares: templates, the session guard, CSRF, the stores it reads."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from rulebus.api.auth import Authenticator
from rulebus.backends.base import ObjectStore, TableStore
from rulebus.backends.registry import open_store
from rulebus.console.sampler import Sampler
from rulebus.console.session import COOKIE, Session, Sessions
from rulebus.errors import BadInput, NotFound

if TYPE_CHECKING:
    from rulebus.runtime import Runtime

PREFIX = "/console"

Page = Callable[[Request, Session], Awaitable[Response]]


class Console:
    def __init__(self, runtime: Runtime, auth: Authenticator) -> None:
        self.runtime = runtime
        self.auth = auth
        self.sampler = Sampler(runtime.bus)
        self._sessions: Sessions | None = None
        self._readers: tuple[TableStore, ObjectStore] | None = None
        self._opening = asyncio.Lock()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("rulebus.console", "templates"),
            autoescape=True,  # payloads, keys and rows are untrusted input
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["json"] = pretty_json
        self.templates.filters["compact"] = lambda value: json.dumps(
            value, ensure_ascii=False, default=str
        )
        self.templates.filters["utc"] = _utc
        self.templates.filters["q"] = lambda value: quote(str(value), safe="")

    @property
    def sessions(self) -> Sessions:
        # Made at the first use of the console, so an app that never opens it
        # leaves no console/ folder in its data directory.
        if self._sessions is None:
            self._sessions = Sessions(self.runtime.data_dir, self.auth)
        return self._sessions

    async def readers(self) -> tuple[TableStore, ObjectStore]:
        """The tables and buckets, for reading: the runtime's own when it runs the engine,
        else (an API process, which closes them after start) a pair opened here once."""
        if self.runtime.runs_engine:
            return self.runtime.tables, self.runtime.objects
        async with self._opening:
            if self._readers is None:
                where, data_dir = self.runtime.backends, self.runtime.data_dir
                tables = open_store("tables", where.tables, data_dir)
                objects = open_store("objects", where.objects, data_dir)
                await tables.open()
                await objects.open()
                self._readers = (tables, objects)
        return self._readers

    def render(
        self, template: str, session: Session | None, status: int = 200, **values: Any
    ) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            prefix=PREFIX, csrf=session.csrf if session else "", **values
        )
        return HTMLResponse(html, status_code=status)

    def page(
        self, handler: Page, *, changes: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind a valid session (else a redirect to the login page);
        with ``changes``, behind this session's CSRF token too."""

        async def endpoint(request: Request) -> Response:
            session = await self.sessions.check(request.cookies.get(COOKIE))
            if session is None:
                back = quote(
                    request.url.path + (f"?{request.url.query}" if request.url.query else "")
                )
                return RedirectResponse(f"{PREFIX}/login?next={back}", status_code=303)
            if changes or request.method == "POST":
                form = await read_form(request)
                if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
                    raise BadInput(
                        "this form has expired or came from elsewhere: reload the page", status=403
                    )
            try:
                return await handler(request, session)
            except (BadInput, NotFound) as exc:
                # A page for people: the reason in the page, not a JSON body.
                status = exc.status if isinstance(exc, BadInput) else 404
                return self.render("error.html", session, status=status, error=str(exc))

        return endpoint


MAX_FORM = 1 << 20  # bytes: a payload in the SQL tester is at most this big


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form (what the console's forms send), read once.

    Parsed here rather than with Starlette's ``request.form()``, which needs
    python-multipart for this too.
    """
    if "console_form" in request.scope:
        return request.scope["console_form"]  # type: ignore[no-any-return]
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadInput("send the form as application/x-www-form-urlencoded", status=415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise BadInput(f"the form is over the limit of {MAX_FORM} bytes", status=413)
    try:
        fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        raise BadInput("the form is not valid UTF-8 URL-encoded text") from None
    request.scope["console_form"] = fields
    return fields


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
