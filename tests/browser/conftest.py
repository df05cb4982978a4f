"""A real browser for the fleet web view: Debian's Chromium (scripts/setup.sh --dev
installs it), driven by Playwright, headless. Never `playwright install`: it downloads
browsers, and these tests run offline.

Every page the fixture opens records the console's errors and refuses (and records) any
request to a host other than this machine's loopback: the view must need nothing from
outside. Screenshots go to $OCPP_TEST_ARTEFACTS (default test-artefacts/ in the checkout)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Route, async_playwright

from tests.cloud.web import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = Path(
    os.environ.get("OCPP_TEST_ARTEFACTS", Path(__file__).resolve().parents[2] / "test-artefacts")
)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class WatchedPage:
    """A browser tab and what it did that a test must see: console errors, requests to
    anywhere but this machine."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)

    async def screenshot(self, name: str) -> Path:
        path = ARTEFACTS / "browser" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once, before the browser starts
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh --dev installs Debian's chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield browser
        await browser.close()


@pytest.fixture
async def watched_page(chromium: Browser) -> AsyncIterator[WatchedPage]:
    context = await chromium.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    page = await context.new_page()
    watched = WatchedPage(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.console_errors.append(message.text)

    async def only_this_machine(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in LOCAL_HOSTS:
            await route.continue_()
        else:
            watched.outside_requests.append(route.request.url)
            await route.abort()

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.console_errors.append(str(error)))
    await context.route("**/*", only_this_machine)
    yield watched
    await context.close()


# -- what several browser tests set up alike ----------------------------------------------


async def sign_in(page: Page, url: str, email: str, lands_on: str | None = None) -> None:
    """Open `url`, answer the sign-in form it leads to, and wait to land on `lands_on`
    (default: `url` itself)."""
    await page.goto(url)
    await page.fill('input[name="email"]', email)
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await page.wait_for_url(lands_on or url)
