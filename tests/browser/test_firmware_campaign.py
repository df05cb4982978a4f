"""A firmware campaign run to completion in a real browser: an operator uploads an image
with the new campaign form, targets a site and a charger model, and watches the charger
go from offered to installed, live, while a real edge daemon fetches and verifies the
image through a real mosquitto and installs it on its simulated charger."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from cloud.store import fleets
from cloud.store.schema import chargers
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
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
from tests.waiting import eventually

EDGE = "site-fw"
IMAGE = bytes(range(256)) * 400  # 100 KiB: a few chunks' worth


@pytest.fixture
async def cloud(broker: Mosquitto, start_cloud: StartCloud) -> RunningCloud:
    running = await start_cloud(broker, web={"live_poll_interval": 0.5})
    acme = fleets.add_fleet(running.engine, "Acme").fleet_id
    fleets.assign_edge(running.engine, EDGE, acme, site_name="Depot East")
    add_user(running.engine, "ann@acme.test", "operator", acme)
    return running


@pytest.fixture
async def charger_at_site(
    start_edge: StartEdge, broker: Mosquitto, cloud: RunningCloud
) -> AsyncIterator[SimulatedCharger]:
    edge: RunningEdge = await start_edge(
        sections={"sync": sync_section(EDGE, broker, cloud)},
        files={"host": "127.0.0.1", "port": free_port()},
    )
    config = SimulatedChargerConfig(
        connectors=1, vendor="ACME", model="AC22", firmware_version="1.0"
    )
    async with charger_at(edge, config) as charger:
        # The form offers the fleet's charger models: the cloud must know this one.
        await eventually(lambda: cloud_knows_model(cloud), within=20)
        yield charger


def cloud_knows_model(cloud: RunningCloud) -> bool:
    with cloud.engine.connect() as connection:
        vendor = connection.execute(
            select(chargers.c.vendor).where(chargers.c.edge_id == EDGE)
        ).scalar_one_or_none()
    return vendor == "ACME"


async def test_an_operator_runs_a_firmware_campaign_to_completion(
    watched_page: WatchedPage, cloud: RunningCloud, charger_at_site: SimulatedCharger
) -> None:
    page = watched_page.page
    await sign_in(page, f"{cloud.api_url}/web/login", "ann@acme.test", f"{cloud.api_url}/web/")
    await page.click('nav a[href="/web/campaigns"]')
    await page.click('a[href="/web/campaigns/new"]')
    await page.wait_for_url(f"{cloud.api_url}/web/campaigns/new")

    await page.check('input[name="source"][value="upload"]')
    await page.set_input_files(
        'input[name="file"]',
        {"name": "cp-2.0.bin", "mimeType": "application/octet-stream", "buffer": IMAGE},
    )
    await page.fill('input[name="version"]', "2.0")
    await page.fill('textarea[name="image_targets"]', "ACME/AC22*")
    await page.check(f'input[name="edges"][value="{EDGE}"]')
    await page.check('input[name="models"][value="ACME/AC22"]')
    await watched_page.screenshot("campaign-new")
    await page.click('form.campaign-form button[type="submit"]')
    await page.wait_for_url(f"{cloud.api_url}/web/campaigns/*")
    await page.evaluate("window.stillTheSamePage = true")

    # The edge fetches and verifies the image, the campaign asks for the install, the
    # charger reports it: each stage arrives through the live stream.
    site = f'tr[data-edge="{EDGE}"][data-charger=""]'
    await page.wait_for_selector(f'{site}[data-stage="verified"]', timeout=60_000)
    installed = f'tr[data-edge="{EDGE}"][data-charger="CP1"][data-stage="installed"]'
    await page.wait_for_selector(installed, timeout=90_000)
    await page.wait_for_selector('.campaign-state[data-state="completed"]', timeout=30_000)
    assert await page.evaluate("window.stillTheSamePage") is True
    assert await page.locator("form.campaign-action").count() == 0  # nothing left to pause
    changes = await page.locator(f"{installed} ul.changes").inner_text()
    assert all(stage in changes for stage in ("offered", "fetched", "verified", "installing"))
    assert (
        'data-stage="installed" data-count="1"'
        in await page.locator("#campaign-summary").inner_html()
    )
    assert charger_at_site.firmware == IMAGE  # the charger got the very bytes uploaded
    await watched_page.screenshot("campaign-installed")

    await page.click('a[href="/web/campaigns"]')
    await page.wait_for_selector('tr[data-campaign][data-state="completed"]')
    assert watched_page.console_errors == []
    assert watched_page.outside_requests == []
