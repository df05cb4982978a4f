"""The live campaign page for real: two aggregators on one store (SQLite, PostgreSQL); an
edge's report stored by one replica, and a pause made through the other's store, are
pushed to the campaign page the serving replica streams, without a reload."""

from __future__ import annotations

import asyncio

from cloud.store import campaigns, fleets
from tests.cloud.campaign_fleet import ReportingEdge, add_image
from tests.cloud.test_web_live import (  # noqa: F401 (fixtures)
    Stream,
    replicas,
    signed_in,
)
from tests.cloud.web import Browser
from tests.conftest import RunningCloud
from tests.mosquitto import Mosquitto

IMAGE = "cp-3.1.bin"


async def test_a_campaign_page_shows_each_stage_and_state_as_it_changes(
    broker: Mosquitto,
    replicas: tuple[RunningCloud, RunningCloud],  # noqa: F811
    signed_in: Browser,  # noqa: F811
) -> None:
    ingesting, _ = replicas
    engine = ingesting.engine
    edge = ReportingEdge(engine, "site-rolling")
    await asyncio.to_thread(fleets.assign_edge, engine, "site-rolling", 1)
    await asyncio.to_thread(edge.boot, "CP-1", "ACME", "AC22")
    await asyncio.to_thread(add_image, engine, IMAGE)
    campaign_id = await asyncio.to_thread(
        campaigns.create_campaign, engine, 1, IMAGE, ["site-rolling"], [], "ann@acme.test"
    )
    path = f"/web/live?view=campaign&campaign={campaign_id}"
    async with signed_in.client.stream("GET", path) as response:
        assert response.status_code == 200
        stream = Stream(response)
        try:
            first = await stream.until("targets", 'data-edge="site-rolling"')
            assert 'data-charger="" data-stage="offered"' in first
            await asyncio.to_thread(edge.progress, IMAGE, "verified")
            # Each push sends the summary, then the targets.
            await stream.until("summary", 'data-stage="verified" data-count="1"')
            await stream.until("targets", 'data-charger="CP-1" data-stage="verified"')
            await asyncio.to_thread(
                campaigns.change_state, engine, campaign_id, "pause", "bob@acme.test", 1
            )
            paused = await stream.until("summary", 'data-state="paused"')
            assert "by bob@acme.test" in paused
        finally:
            stream.cancel()
