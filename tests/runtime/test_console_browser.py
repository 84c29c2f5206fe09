"""The web console in a real browser: Debian's chromium, driven by Playwright, against
``rulebus up`` of the exchange.

With ``RULEBUS_SCREENSHOTS=DIR`` the tour of the pages also saves a PNG of each
of them in DIR (docs/console.md shows the ones in docs/img):

    RULEBUS_SCREENSHOTS=docs/img .venv/bin/python -m pytest tests/runtime/test_console_browser.py
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.runtime.console_exchange import (
    Exchange,
    a_flagged_id,
    letter_of,
    post_event,
    running_exchange,
)
from tests.runtime.helpers import wait_until
from tests.services import unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: browsers cannot be downloaded here
VIEWPORT = {"width": 1280, "height": 800}
WAIT_MS = 15_000  # for what the engine does after a click


@pytest.fixture(scope="module")
def exchange(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exchange]:
    with running_exchange("embedded", request, tmp_path_factory.mktemp("browser")) as found:
        yield found


@pytest.fixture(scope="module")
def browser(exchange: Exchange) -> Iterator[Browser]:
    # After the exchange: Playwright's sync API keeps an event loop running in
    # this thread, and starting a server makes its key with asyncio.run.
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright", "pip install playwright (the dev extra has it)")
    if not CHROMIUM.exists():
        unavailable("chromium", f"no {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield launched
        launched.close()


@dataclass
class Tab:
    """A browser tab on the console, with the script errors its pages have had."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _console(self, message: ConsoleMessage) -> None:
        # A page's own status (a 403 for a wrong key) is the tests' to check.
        if message.type == "error" and message.location.get("url") != self.page.url:
            self.errors.append(f"{message.text} ({message.location.get('url')})")

    def log_in(self, key: str) -> None:
        self.page.fill("#key", key)
        self.page.click("button:text-is('Log in')")

    def shot(self, name: str) -> None:
        """With RULEBUS_SCREENSHOTS, the page as it is now, in DIR/console-NAME.png."""
        folder = os.environ.get("RULEBUS_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(folder) / f"console-{name}.png"))


def new_tab(browser: Browser, exchange: Exchange) -> Tab:
    context = browser.new_context(viewport=VIEWPORT, base_url=exchange.server.url)
    return Tab(context.new_page())


@pytest.fixture(scope="module")
def tab(browser: Browser, exchange: Exchange) -> Iterator[Tab]:
    """One logged-in tab for the tests of this module."""
    opened = new_tab(browser, exchange)
    opened.page.goto("/console/login")
    opened.log_in(exchange.server.key)
    yield opened
    opened.page.context.close()


@pytest.fixture(autouse=True)
def no_script_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test did in the tab, its pages' scripts raised and logged no error."""
    yield
    if "tab" in request.fixturenames:
        used: Tab = request.getfixturevalue("tab")
        errors, used.errors[:] = list(used.errors), []
        assert errors == []


def counter(page: Page, rule: str, name: str) -> int:
    row = page.locator(f"#rule-{rule}").inner_text()
    found = re.search(rf"{name}: (\d+)", row)
    return int(found.group(1)) if found else 0


def test_a_visit_goes_through_the_login_form_and_back(browser: Browser, exchange: Exchange) -> None:
    """A page opened without a session shows the login form; an admin key brings it back."""
    visitor = new_tab(browser, exchange)
    try:
        visitor.page.goto("/console/rules")
        assert visitor.page.locator("h1").inner_text() == "Log in"
        visitor.shot("login")
        visitor.log_in("rb_not_a_key")
        assert "unknown or revoked API key" in visitor.page.locator(".error").inner_text()
        visitor.log_in(exchange.server.key)
        assert visitor.page.url.endswith("/console/rules")
        assert visitor.page.locator("h1").inner_text() == "Rules"
        assert visitor.errors == []
    finally:
        visitor.page.context.close()


def test_send_from_the_sql_tester_moves_the_counter_and_is_traced(tab: Tab) -> None:
    """Send publishes the payload; the rule's counter moves and the event's trace shows
    the rule matched and its action."""
    page = tab.page
    page.goto("/console/rules")
    before = counter(page, "archive-events", "rule_matches")
    page.goto("/console/sql")
    page.fill("#sql", "SELECT id, price * 2 AS doubled FROM 'event/+'")
    page.fill("#topic", "event/sell")
    page.fill("#payload", '{"id": "browser-sell-1", "type": "sell", "price": 21}')
    page.click("button:text-is('Send')")
    sent = page.locator("#sent")
    assert "Sent as event" in sent.inner_text()
    # Back on the tester, the event sent is shown as the SQL sees it.
    assert '"doubled": 42' in page.locator("#output").inner_text()

    page.goto("/console/rules")
    deadline = time.monotonic() + WAIT_MS / 1000
    while counter(page, "archive-events", "rule_matches") <= before:
        assert time.monotonic() < deadline, "the rule's counter did not move"
        time.sleep(0.2)
        page.reload()

    page.go_back()  # to the tester's message (reloads add no history)
    page.locator("#sent a").click()
    assert page.locator("h1").inner_text().startswith("Event ")
    trace = json.loads(page.locator("#trace").inner_text())
    assert trace["event"]["client_id"] == "console"
    rules = {rule["rule"]: rule for rule in trace["rules"]}
    assert not rules["check-buys"]["matched"]
    archived = rules["archive-events"]
    assert archived["matched"] and archived["status"] == "delivered", archived
    (action,) = archived["attempts"][0]["actions"]
    assert (action["action"], action["resource"], action["error"]) == ("table", "events", None)


def test_redrive_a_dead_letter(tab: Tab, exchange: Exchange) -> None:
    """Redrive on a dead letter's row delivers it again: it leaves the list, the webhook
    gets it."""
    server, receiver, page = exchange.server, exchange.receiver, tab.page
    buy = a_flagged_id("browser-redrive")
    post_event(server, {"type": "buy", "price": 9, "id": buy})
    letter = wait_until(lambda: letter_of(server, buy), what="the dead letter")
    page.goto("/console/dead-letters")
    row = page.locator("tr", has_text=letter["event_id"])
    receiver.status = None
    try:
        row.get_by_role("button", name="Redrive", exact=True).click()
        assert page.locator(".message").inner_text() == "redriven: 1"
        assert row.count() == 0
        wait_until(lambda: any(buy.encode() in r.body for r in receiver.received), what="webhook")
    finally:
        receiver.status = 400


def test_the_live_tail_shows_an_event_published_while_open(tab: Tab, exchange: Exchange) -> None:
    page = tab.page
    page.goto("/console/tail?topic=event/sell")
    page.wait_for_selector("#tail-status:text-is('streaming')")
    event = post_event(exchange.server, {"type": "sell", "price": 5, "id": "browser-tail"})
    item = page.locator("#tail li", has_text=event)
    item.wait_for(timeout=WAIT_MS)
    assert '"price":5' in item.inner_text()
    assert item.get_by_role("link").get_attribute("href") == f"/console/events/{event}"


def test_every_page_opens_without_script_errors(tab: Tab, exchange: Exchange) -> None:
    """A tour of the pages (with something on each), and their screenshots when asked."""
    server, page = exchange.server, tab.page
    buy = a_flagged_id("browser-tour")
    post_event(server, {"type": "buy", "price": 310, "id": buy})
    wait_until(lambda: letter_of(server, buy), what="the dead letter")
    event = post_event(server, {"type": "sell", "price": 12.5, "id": "browser-tour-sell"})
    pages = [
        ("overview", "/console", "Overview"),
        ("rules", "/console/rules", "Rules"),
        ("events", "/console/events", "Events"),
        ("event", f"/console/events/{event}", f"Event {event}"),
        ("tables", "/console/tables", "Tables and buckets"),
        ("table", "/console/tables/events", "events"),
        ("bucket", "/console/buckets/fraud-archive", "fraud-archive"),
        ("dead-letters", "/console/dead-letters", "Dead letters"),
        ("architecture", "/console/architecture", "Architecture"),
    ]
    for name, path, heading in pages:
        page.goto(path)
        assert heading in page.locator("h1").inner_text(), path
        tab.shot(name)
    page.goto(f"/console/sql?rule=check-buys&event={buy}")
    page.click("button:text-is('Test')")
    assert f'"id": "{buy}"' in page.locator("#output").inner_text()
    tab.shot("sql")
    page.goto("/console/tail")
    page.wait_for_selector("#tail-status:text-is('streaming')")
    post_event(server, {"type": "sell", "price": 99, "id": "browser-tour-tail"})
    page.locator("#tail li").first.wait_for(timeout=WAIT_MS)
    tab.shot("tail")
