"""The tariffs page in a real browser: an admin adds the fleet's tariff with a night band
through the plain form (a wrong one first: the form comes back with the error), sees it
listed, and the fleet's sessions priced by it once the aggregator's re-pricing is done."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloud.store import fleets
from tests.browser.conftest import WatchedPage
from tests.cloud.test_sessions_store import T0, Site
from tests.cloud.web import PASSWORD, add_user
from tests.conftest import RunningCloud, StartCloud
from tests.mosquitto import Mosquitto


@pytest.fixture
async def cloud(broker: Mosquitto, start_cloud: StartCloud) -> RunningCloud:
    running = await start_cloud(broker, sessions={"reprice_poll": 0.5})
    engine = running.engine
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    fleets.assign_edge(engine, "depot-1", acme, site_name="Depot North")
    add_user(engine, "ada@acme.test", "admin", acme)
    depot = Site(engine, "depot-1")
    for number in range(1, 4):  # 10 kWh each, 10:00 to 11:00
        depot.session(number, T0 + timedelta(days=number), energy_wh=10_000)
    return running


async def test_an_admin_adds_a_fleet_tariff_and_the_sessions_are_priced_by_it(
    watched_page: WatchedPage, cloud: RunningCloud
) -> None:
    page = watched_page.page
    await page.goto(f"{cloud.api_url}/web/tariffs")
    await page.fill('input[name="email"]', "ada@acme.test")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await page.wait_for_url(f"{cloud.api_url}/web/tariffs")
    assert "No tariff prices this fleet" in await page.inner_text("#tariffs")
    await page.click("#add-tariff")
    await page.wait_for_url("**/web/tariffs/new")
    await page.fill('input[name="name"]', "acme home charging")
    await page.fill('input[name="price"]', "0.32")
    await page.fill('input[name="valid_from"]', "2026-03-01T00:00")
    for day in ("mon", "tue", "wed", "thu", "fri"):
        await page.check(f'input[name="band-0-days"][value="{day}"]')
    await page.fill('input[name="band-0-start"]', "07:00")
    await page.fill('input[name="band-0-end"]', "22:00")
    await page.fill('input[name="band-0-price"]', "0")  # refused: above 0
    await page.click('#tariff-form button[type="submit"]')
    errors = page.locator("#form-errors")
    await errors.wait_for()
    assert "Band 1: a price per kWh is more than 0." in await errors.inner_text()
    # The browser logs the refused form's 422 answer as a failed load: that one is meant.
    assert [error for error in watched_page.console_errors if "422" not in error] == []
    watched_page.console_errors.clear()
    # The form came back as filled: only the wrong field to correct.
    assert await page.input_value('input[name="name"]') == "acme home charging"
    await page.fill('input[name="band-0-price"]', "0.40")
    await page.click('#tariff-form button[type="submit"]')
    await page.wait_for_url(f"{cloud.api_url}/web/tariffs")
    row = page.locator('tr.tariff[data-scope="fleet"]')
    text = await row.inner_text()
    assert "acme home charging" in text and "0.32 EUR" in text
    assert "mon-fri 07:00\u201322:00: 0.4" in text and "in force" in text
    await watched_page.screenshot("web-tariffs")

    # The aggregator's re-pricing prices the three sessions (weekdays, 10:00: 0.40).
    await page.goto(f"{cloud.api_url}/web/sessions?edge=depot-1")
    for _ in range(60):
        if await page.locator("text=4.00 EUR").count() == 3:
            break
        await page.wait_for_timeout(500)  # the re-pricing runs on its own time
        await page.reload()
    assert await page.locator("text=4.00 EUR").count() == 3
    assert await page.locator("text=cost being recalculated").count() == 0
    assert watched_page.console_errors == []
    assert watched_page.outside_requests == []
