"""The Sessions page in a real browser: filter with the plain form, download the CSV of
what is shown, see a session's curve drawn (uPlot under the view's CSP), and watch a
real edge's transaction appear and stop in the list without reloading."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from cloud.store import fleets
from cloud.store.tariffs import create_tariff
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.browser.conftest import WatchedPage
from tests.cloud.test_sessions_store import T0, Site, flat
from tests.cloud.web import PASSWORD, add_user
from tests.conftest import RunningCloud, StartCloud, StartEdge, charger_at, sync_section
from tests.mosquitto import Mosquitto

LIVE_EDGE = "depot-live"


@pytest.fixture
async def cloud(broker: Mosquitto, start_cloud: StartCloud) -> RunningCloud:
    running = await start_cloud(broker, web={"live_poll_interval": 0.5})
    engine = running.engine
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    fleets.assign_edge(engine, "depot-1", acme, site_name="Depot North")
    fleets.assign_edge(engine, "bolt-1", bolt, site_name="Bolt HQ")
    fleets.assign_edge(engine, LIVE_EDGE, acme, site_name="Depot Live")
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


@pytest.fixture
async def live_site(
    start_edge: StartEdge, broker: Mosquitto, cloud: RunningCloud
) -> AsyncIterator[SimulatedCharger]:
    """A real edge daemon of the fleet syncing through the broker, a simulated charger at
    it, and a card it accepts."""
    edge = await start_edge(sections={"sync": sync_section(LIVE_EDGE, broker)})
    await edge.execute(
        "INSERT INTO id_tags (id_tag, status, parent_id_tag, created_at, updated_at) "
        "VALUES ('CAR-LIVE', 'Accepted', 'ACC-1', 'x', 'x')"
    )
    async with charger_at(edge, SimulatedChargerConfig(connectors=1)) as charger:
        yield charger


async def test_a_transaction_synced_by_a_real_edge_shows_in_the_list_without_reloading(
    watched_page: WatchedPage, cloud: RunningCloud, live_site: SimulatedCharger
) -> None:
    page = watched_page.page
    await page.goto(f"{cloud.api_url}/web/sessions?edge={LIVE_EDGE}")
    await page.fill('input[name="email"]', "vic@acme.test")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await page.wait_for_url(f"{cloud.api_url}/web/sessions?edge={LIVE_EDGE}")
    assert await page.locator("tr.session").count() == 0
    # Marks this document: a reload would lose it.
    await page.evaluate("window.notReloaded = true")
    await page.wait_for_function("document.querySelector('[sse-connect]') !== null")

    transaction_id, status = await live_site.start_transaction(1, "CAR-LIVE")
    assert status == "Accepted"
    row = page.locator(f'tr.session[data-transaction="{transaction_id}"]')
    await row.wait_for(timeout=30_000)
    assert "running" in await row.inner_text()
    await live_site.send_meter_values(1, 1800)  # 3.6 kWh at the simulator's 7.2 kW
    await live_site.stop_transaction(1)
    # Priced once stopped: the cost is the stop arriving.
    await row.locator("text=1.08 EUR").wait_for(timeout=30_000)
    text = await row.inner_text()
    assert "running" not in text and "CAR-LIVE" in text and "3.600 kWh" in text
    assert await page.evaluate("window.notReloaded === true")
    await watched_page.screenshot("web-sessions-live")
    assert watched_page.console_errors == []
    assert watched_page.outside_requests == []
