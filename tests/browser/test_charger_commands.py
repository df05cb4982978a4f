"""An operator sends a command from the charger page in a real browser, to a real edge's
simulated charger through a real mosquitto, and sees its result arrive without reloading."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cloud.store import fleets
from edge.simulator import SimulatedChargerConfig
from tests.browser.conftest import WatchedPage, sign_in
from tests.cloud.web import add_user
from tests.conftest import (
    RunningCloud,
    RunningEdge,
    StartCloud,
    StartEdge,
    charger_at,
    free_port,
    sync_section,
)
from tests.mosquitto import Mosquitto

EDGE = "site-9"


@pytest.fixture
async def cloud(broker: Mosquitto, start_cloud: StartCloud) -> RunningCloud:
    running = await start_cloud(broker, web={"live_poll_interval": 0.5})
    acme = fleets.add_fleet(running.engine, "Acme").fleet_id
    fleets.assign_edge(running.engine, EDGE, acme, site_name="Depot West")
    add_user(running.engine, "ann@acme.test", "operator", acme)
    return running


@pytest.fixture
async def charger_at_site(
    start_edge: StartEdge, broker: Mosquitto, cloud: RunningCloud
) -> AsyncIterator[RunningEdge]:
    edge = await start_edge(
        sections={"sync": sync_section(EDGE, broker, cloud)},
        files={"host": "127.0.0.1", "port": free_port()},
    )
    async with charger_at(edge, SimulatedChargerConfig(connectors=1)):
        yield edge


async def test_an_operator_sends_a_command_and_sees_its_result_live(
    watched_page: WatchedPage, cloud: RunningCloud, charger_at_site: RunningEdge
) -> None:
    page = watched_page.page
    await sign_in(page, f"{cloud.api_url}/web/login", "ann@acme.test", f"{cloud.api_url}/web/")
    await page.goto(f"{cloud.api_url}/web/sites/{EDGE}")
    # The charger appears once the edge has synced it; the site page links to it.
    await page.wait_for_selector('tr[data-charger="CP1"] a')
    await page.click('tr[data-charger="CP1"] a')
    await page.wait_for_url(f"{cloud.api_url}/web/edges/{EDGE}/chargers/CP1")
    await page.wait_for_selector("section#charger-status .badge.online")
    await page.evaluate("window.stillTheSamePage = true")

    trigger = page.locator('form[data-action="trigger"]')
    await trigger.locator('select[name="requested_message"]').select_option("StatusNotification")
    await trigger.locator('input[name="connector_id"]').fill("1")
    await trigger.locator('button[type="submit"]').click()
    # The command shows at once (from the form's answer), then its result from the edge
    # through the live stream.
    await page.wait_for_selector("tr[data-command]")
    await page.wait_for_selector('tr[data-command][data-outcome="done"]', timeout=60_000)
    row = await page.locator("tr[data-command]").inner_text()
    assert "ann@acme.test" in row and "TriggerMessage: Accepted" in row
    assert await page.evaluate("window.stillTheSamePage") is True
    await watched_page.screenshot("charger-command-done")

    assert watched_page.console_errors == []
    assert watched_page.outside_requests == []
