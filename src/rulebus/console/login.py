"""The login form, which trades an ``admin`` API key for a session cookie, and logout."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from rulebus.console.session import COOKIE, LIFETIME, Session
from rulebus.console.web import PREFIX, Console, Page, read_form
from rulebus.errors import RulebusError


def _next(value: object) -> str:
    # Only back into the console: never a redirect to another site.
    text = str(value or "")
    return text if text.startswith(PREFIX + "/") or text == PREFIX else PREFIX


def login_page(console: Console) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if request.method == "GET":
            return console.render(
                "login.html", None, next=_next(request.query_params.get("next")), error=""
            )
        form = await read_form(request)
        target = _next(form.get("next"))
        try:
            cookie, _ = await console.sessions.login(str(form.get("key") or ""))
        except RulebusError as exc:
            return console.render("login.html", None, status=403, next=target, error=str(exc))
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=LIFETIME,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    return endpoint


def logout(console: Console) -> Page:
    async def endpoint(request: Request, session: Session) -> Response:
        console.sessions.logout(request.cookies.get(COOKIE))
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    return endpoint
