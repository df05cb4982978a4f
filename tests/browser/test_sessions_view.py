"""The Sessions page in a real browser: filter with the plain form, download the CSV of
what is shown, and see a session's curve drawn (uPlot under the view's CSP)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from cloud.store import fleets
from cloud.store.tariffs import create_tariff
from tests.browser.conftest import WatchedPage
from tests.cloud.test_sessions_store import T0, Site, flat
from tests.cloud.web import PASSWORD, add_user
from tests.conftest import RunningCloud, StartCloud
from tests.mosquitto import Mosquitto


@pytest.fixture
async def cloud(broker: Mosquitto, start_cloud: StartCloud) -> RunningCloud:
    running = await start_cloud(broker)
    engine = running.engine
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    fleets.assign_edge(engine, "depot-1", acme, site_name="Depot North")
    fleets.assign_edge(engine, "bolt-1", bolt, site_name="Bolt HQ")
    add_user(engine, "vic@acme.test", "viewer", acme)
    create_tariff(engine, flat("0.30", T0 - timedelta(days=30)))
    depot = Site(engine, "depot-1")
    for number in range(1, 5):
        depot.session(
            number,
            T0 + timedelta(days=number),
            energy_wh=1000 * number,
            card="CARD-A" if number % 2 else "CARD-B",
            parent="ACC-1",
            samples=5 if number == 3 else 0,
            received=timedelta(hours=2) if number == 3 else timedelta(seconds=1),
        )
    Site(engine, "bolt-1").session(9, T0, card="CARD-A")
    return running


async def test_a_fleet_manager_filters_sessions_and_downloads_the_csv_shown(
    watched_page: WatchedPage, cloud: RunningCloud
) -> None:
    page = watched_page.page
    await page.goto(f"{cloud.api_url}/web/sessions")
    await page.fill('input[name="email"]', "vic@acme.test")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await page.wait_for_url(f"{cloud.api_url}/web/sessions")
    rows = page.locator("tr.session")
    assert await rows.count() == 4

    await page.select_option('select[name="edge"]', "depot-1")
    await page.fill('input[name="card"]', "CARD-A")
    await page.click('#session-filters button[type="submit"]')
    # A plain GET form: every field in the query, the empty ones too.
    await page.wait_for_url(lambda url: "edge=depot-1" in url and "card=CARD-A" in url)
    shown = [
        (await row.get_attribute("data-edge"), await row.get_attribute("data-transaction"))
        for row in await rows.all()
    ]
    assert shown == [("depot-1", "3"), ("depot-1", "1")]
    assert "recorded offline, synced at" in await rows.first.inner_text()
    await watched_page.screenshot("web-sessions")

    async with page.expect_download() as download_info:
        await page.click("#csv-link")
    download = await download_info.value
    path = await download.path()
    exported = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [(row["edge_id"], row["transaction_id"]) for row in exported] == shown
    assert [row["cost"] for row in exported] == ["0.90", "0.30"]

    await page.click("tr.session >> nth=0 >> a")
    await page.wait_for_url("**/web/sessions/depot-1/3")
    await page.wait_for_selector('#session-curve[data-drawn="true"] canvas')
    await watched_page.screenshot("web-session-curve")
    assert watched_page.console_errors == []
    assert watched_page.outside_requests == []
