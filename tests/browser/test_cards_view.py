"""The cards pages in a real browser: import a CSV file, read its preview (a bad line
first, then the file corrected), apply it, and find the cards in the fleet's list."""

from __future__ import annotations

import pytest

from cloud.store import desired, fleets
from contract.protocol import CardEntry
from tests.browser.conftest import WatchedPage
from tests.cloud.web import PASSWORD, add_user, charger_events, sync_edge
from tests.conftest import RunningCloud, StartCloud
from tests.mosquitto import Mosquitto

GOOD = (
    "id_tag,status,expiry_date,parent_id_tag,label,sites,chargers\n"
    "04A1B2C3,Accepted,2027-01-31,FLEET-ACME,Van 7,depot-1;depot-2,\n"
    "04AA0001,Accepted,,FLEET-ACME,Pool car,depot-1,D1-CP\n"
    "OLD-1,Blocked,,,lost card,,\n"
)
BAD = GOOD + "04AA0002,,,,,bolt-1,\n"


@pytest.fixture
async def cloud(broker: Mosquitto, start_cloud: StartCloud) -> RunningCloud:
    running = await start_cloud(broker)
    engine = running.engine
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    for edge_id, fleet_id, name, charger in (
        ("depot-1", acme, "Depot North", "D1-CP"),
        ("depot-2", acme, "Depot South", "D2-CP"),
        ("bolt-1", bolt, "Bolt HQ", "B-CP"),
    ):
        fleets.assign_edge(engine, edge_id, fleet_id, site_name=name)
        sync_edge(engine, edge_id, charger_events(charger, [(1, "Available", "NoError")]))
    desired.set_card_list(engine, "depot-1", [CardEntry(id_tag="OLD-1", label="lost card")])
    add_user(engine, "ann@acme.test", "operator", acme)
    return running


async def test_a_fleet_manager_imports_cards_from_a_csv_file(
    watched_page: WatchedPage, cloud: RunningCloud
) -> None:
    page = watched_page.page
    await page.goto(f"{cloud.api_url}/web/cards")
    await page.fill('input[name="email"]', "ann@acme.test")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await page.wait_for_url(f"{cloud.api_url}/web/cards")
    await page.click("#import-link")
    await page.wait_for_url("**/web/card-import")

    async def preview(text: str) -> None:
        await page.set_input_files(
            'input[name="file"]',
            files=[{"name": "cards.csv", "mimeType": "text/csv", "buffer": text.encode()}],
        )
        await page.click('#import-form button[type="submit"]')
        await page.wait_for_selector("#import-summary")

    await preview(BAD)
    assert await page.inner_text('#import-errors tr[data-line="5"]') == (
        "5\tno site 'bolt-1' in your fleet"
    )
    assert await page.locator("#apply-form").count() == 0
    # A preview with bad lines is answered 422, which Chromium logs: that one only.
    assert [error for error in watched_page.console_errors if "(Unprocessable" not in error] == []
    watched_page.console_errors.clear()
    await page.go_back()
    await preview(GOOD)
    assert await page.inner_text('dd[data-count="added"]') == "2"
    assert await page.inner_text('dd[data-count="blocked"]') == "1"
    assert await page.inner_text('dd[data-count="errors"]') == "0"
    await watched_page.screenshot("web-cards-import-preview")
    await page.click('#apply-form button[type="submit"]')
    await page.wait_for_selector("#import-done")
    assert "2 added, 0 changed, 1 blocked" in await page.inner_text("#import-done")

    await page.goto(f"{cloud.api_url}/web/cards")
    rows = page.locator("tr.card")
    assert [await row.get_attribute("data-card") for row in await rows.all()] == [
        "04A1B2C3",
        "04AA0001",
        "OLD-1",
    ]
    van = page.locator('tr.card[data-card="04A1B2C3"]')
    assert await van.get_attribute("data-sites") == "depot-1;depot-2"
    assert "Depot North, Depot South" in await van.inner_text()
    assert await page.get_attribute('tr.card[data-card="OLD-1"]', "data-status") == "Blocked"
    await watched_page.screenshot("web-cards")
    await page.click('tr.card[data-card="04AA0001"] a')
    await page.wait_for_selector("#card-sites")
    await watched_page.screenshot("web-card")
    assert watched_page.console_errors == []
    assert watched_page.outside_requests == []
