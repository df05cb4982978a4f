"""The fleet web view in a real browser, on a real fleet: the aggregator and an edge
daemon syncing through a real mosquitto, a simulated charger at the site."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from cloud.store import fleets
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.browser.conftest import WatchedPage
from tests.cloud.web import PASSWORD, add_user, charger_events, set_presence, sync_edge
from tests.conftest import (
    RunningCloud,
    RunningEdge,
    StartCloud,
    StartEdge,
    free_port,
    stop_edge,
    sync_section,
)
from tests.mosquitto import Mosquitto

EDGE = "site-7"
ROW = f'tr[data-edge="{EDGE}"]'


@pytest.fixture
async def cloud(broker: Mosquitto, start_cloud: StartCloud) -> RunningCloud:
    running = await start_cloud(broker, web={"live_poll_interval": 0.5})
    acme = fleets.add_fleet(running.engine, "Acme").fleet_id
    fleets.assign_edge(running.engine, EDGE, acme, site_name="Depot North", location="Lyon")
    add_user(running.engine, "ann@acme.test", "operator", acme)
    # Two more sites of the fleet, as their edges left them: one offline with a fault it
    # reported before, one online and behind; and another fleet's site, never shown.
    for edge_id, name, fleet_id in [
        ("site-south", "Depot South", acme),
        ("site-east", "Car park East", acme),
        ("bolt-1", "Bolt HQ", fleets.add_fleet(running.engine, "Bolt").fleet_id),
    ]:
        fleets.assign_edge(running.engine, edge_id, fleet_id, site_name=name, location="Lyon")
    sync_edge(running.engine, "site-south", charger_events("S1", [(1, "Faulted", "GroundFailure")]))
    set_presence(running.engine, "site-south", "offline")
    sync_edge(running.engine, "site-east", charger_events("E1", [(1, "Available", "NoError")]))
    set_presence(running.engine, "site-east", "online", backlog=420, oldest_age_s=1800.0)
    sync_edge(running.engine, "bolt-1", charger_events("B1", [(1, "Available", "NoError")]))
    return running


async def start_site(start_edge: StartEdge, broker: Mosquitto, cloud: RunningCloud) -> RunningEdge:
    return await start_edge(
        sections={"sync": sync_section(EDGE, broker, cloud)},
        files={"host": "127.0.0.1", "port": free_port()},
    )


@pytest.fixture
async def charger_at_site(
    start_edge: StartEdge, broker: Mosquitto, cloud: RunningCloud
) -> AsyncIterator[RunningEdge]:
    edge = await start_site(start_edge, broker, cloud)
    async with connect(f"{edge.url}/CP1", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        charger = SimulatedCharger("CP1", connection, SimulatedChargerConfig(connectors=2))
        listener = asyncio.create_task(charger.start())
        await charger.boot()
        await charger.send_status(1, "Available")
        await charger.send_status(2, "Charging")
        yield edge
        listener.cancel()


async def test_a_fleet_manager_watches_a_site_go_offline_and_come_back_live(
    watched_page: WatchedPage,
    cloud: RunningCloud,
    charger_at_site: RunningEdge,
    start_edge: StartEdge,
    broker: Mosquitto,
) -> None:
    page = watched_page.page
    await page.goto(f"{cloud.api_url}/web/")
    assert "/web/login" in page.url
    await page.fill('input[name="email"]', "ann@acme.test")
    await page.fill('input[name="password"]', PASSWORD)
    await page.click('button[type="submit"]')
    await page.wait_for_url(f"{cloud.api_url}/web/")
    # The edge's status and its charger arrive live if they were not there at load.
    await page.wait_for_selector(f'{ROW}[data-state="online"]')
    await page.wait_for_function(
        f"document.querySelector('{ROW}').textContent.includes('Charging 1')"
    )
    # A mark in this document: a reload would lose it.
    await page.evaluate("window.stillTheSamePage = true")
    await watched_page.screenshot("overview-online")
    edges_shown = await page.eval_on_selector_all(
        "tr[data-edge]", "rows => rows.map(row => row.dataset.edge)"
    )
    # Sites needing attention first (then by name); another fleet's never.
    assert edges_shown == ["site-east", "site-south", EDGE]

    await stop_edge(charger_at_site)  # a clean stop: the edge says it goes offline
    await page.wait_for_selector(f'{ROW}[data-state="offline"]')
    assert "offline" in await page.locator(ROW).inner_text()
    await watched_page.screenshot("overview-offline")

    await page.click(f"{ROW} a")
    await page.wait_for_url(f"{cloud.api_url}/web/sites/{EDGE}")
    await page.wait_for_selector("text=This site is offline")
    assert await page.locator("td.lastknown[data-status='Charging']").count() == 1
    await watched_page.screenshot("site-offline")
    await page.evaluate("window.stillTheSamePage = true")

    await start_site(start_edge, broker, cloud)  # the same store: the site comes back
    await page.wait_for_selector("section#site .badge.online")
    await page.wait_for_selector("span.status[data-status='Charging']")
    assert await page.locator("text=This site is offline").count() == 0
    assert await page.evaluate("window.stillTheSamePage") is True
    await watched_page.screenshot("site-online")

    assert watched_page.console_errors == []
    assert watched_page.outside_requests == []
