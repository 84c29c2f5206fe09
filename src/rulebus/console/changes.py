"""The console's forms that change something: enable or disable a rule, redrive or purge
dead letters, send an event from the SQL tester.

Each runs behind the session's CSRF token (``Console.page(changes=True)``)
and answers with a redirect to the page it came from (post, redirect, get),
carrying a one-line message.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from rulebus.api.ingest import publish_to_topic
from rulebus.console.pages import Outcome, render_sql, sql_form
from rulebus.console.session import Session
from rulebus.console.web import PREFIX, Console, read_form
from rulebus.dead_letters import LetterFilter, in_chunks
from rulebus.errors import BadInput
from rulebus.metrics import IngestMetrics
from rulebus.reload import request_reload, set_rule_enabled

CLIENT_ID = "console"  # the client id of the events the SQL tester sends


def _back(page: str, message: str) -> Response:
    return RedirectResponse(f"{PREFIX}/{page}?message={quote(message)}", status_code=303)


def _filter_query(wanted: LetterFilter) -> dict[str, str]:
    return {"event": wanted.event, "rule": wanted.rule, "topic": wanted.topic}


def _back_to_letters(wanted: LetterFilter, message: str) -> Response:
    """To the dead letters, filtered as the form was."""
    kept = {name: value for name, value in _filter_query(wanted).items() if value}
    query = urlencode({**kept, "message": message}, quote_via=quote)
    return RedirectResponse(f"{PREFIX}/dead-letters?{query}", status_code=303)


class Changes:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.sent = IngestMetrics(f"{PREFIX}/sql")

    async def set_enabled(self, request: Request, session: Session) -> Response:
        app = self.c.runtime.app
        name = request.path_params["name"]
        if name not in app.rules:
            raise BadInput(f"no rule named {name!r}", status=404)
        form = await read_form(request)
        wanted = form.get("enabled")
        if wanted not in ("true", "false"):
            raise BadInput("enabled must be true or false")
        enabled = wanted == "true"
        # The app file is the source of truth: edited in place, then every
        # process of this data directory (this one too) reloads it.
        await asyncio.to_thread(set_rule_enabled, Path(app.file), name, enabled)
        pids = request_reload(self.c.runtime.data_dir)
        state = "enabled" if enabled else "disabled"
        return _back(
            "rules", f"{name} {state} in the app file; reload asked of {len(pids)} processes"
        )

    async def redrive(self, request: Request, session: Session) -> Response:
        form = await read_form(request)
        ids, wanted = await self._chosen_letters(form)
        count = await in_chunks(self.c.runtime.bus.redrive, ids)
        return _back_to_letters(wanted, f"redriven: {count}")

    async def purge(self, request: Request, session: Session) -> Response:
        """Purging is final: the first post shows what would go, the confirmed one purges."""
        form = await read_form(request)
        ids, wanted = await self._chosen_letters(form)
        if form.get("confirmed") != "true":
            one = None if form.get("all") == "true" else ids[0]
            return self.c.render(
                "dlq_purge.html", session, one=one, count=len(ids), q=_filter_query(wanted)
            )
        count = await in_chunks(self.c.runtime.bus.purge, ids)
        return _back_to_letters(wanted, f"purged: {count}")

    async def _chosen_letters(self, form: dict[str, str]) -> tuple[list[int], LetterFilter]:
        """The ids a dead-letter form names: its ``id``, or with ``all=true`` every one
        that its filter (``event``, ``rule``, ``topic``) chooses; and that filter."""
        wanted = LetterFilter(form.get("event", ""), form.get("rule", ""), form.get("topic", ""))
        if form.get("all") == "true":
            return [letter.id for letter in await wanted.chosen(self.c.runtime.bus)], wanted
        try:
            return [int(form.get("id", ""))], wanted
        except ValueError:
            raise BadInput("give a dead letter's id, or all=true") from None

    async def send(self, request: Request, session: Session) -> Response:
        """The SQL tester's Send: its payload published to its topic, as ``POST /topics``
        does it, by the session's key; then the tester again, showing the event sent."""
        form = sql_form(await read_form(request))

        async def payload() -> bytes:
            return form["payload"].encode()

        try:
            event = await publish_to_topic(
                self.c.runtime.bus, session.found, form["topic"], payload, CLIENT_ID, self.sent
            )
        except BadInput as exc:
            return render_sql(self.c, session, form, Outcome("error", str(exc)), status=exc.status)
        query = urlencode(
            {"sent": event.id, "sql": form["sql"], "sql_version": form["sql_version"]}
        )
        return RedirectResponse(f"{PREFIX}/sql?{query}", status_code=303)
