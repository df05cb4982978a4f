"""The live alerts page for real: two aggregators on one store (SQLite, PostgreSQL); an
alert raised, then cleared, where the serving replica does not look is pushed to the
page it serves without a reload."""

from __future__ import annotations

import asyncio

from cloud.store import alerts as alerts_store
from cloud.store import fleets
from cloud.store.alerts import Clearing, NewAlert
from cloud.store.times import utc_now
from tests.cloud.test_web_live import (  # noqa: F401 (fixtures)
    Stream,
    replicas,
    signed_in,
)
from tests.cloud.web import Browser
from tests.conftest import RunningCloud
from tests.mosquitto import Mosquitto


async def test_a_new_alert_appears_on_the_live_alerts_page_and_moves_when_cleared(
    broker: Mosquitto,
    replicas: tuple[RunningCloud, RunningCloud],  # noqa: F811
    signed_in: Browser,  # noqa: F811
) -> None:
    ingesting, _ = replicas
    # A quiet edge (nothing else of it is stored meanwhile): only the alert moves the page.
    await asyncio.to_thread(fleets.assign_edge, ingesting.engine, "site-alerting", 1)
    async with signed_in.client.stream("GET", "/web/live?view=alerts") as response:
        assert response.status_code == 200
        stream = Stream(response)
        try:
            first = await stream.until("open", "Open")
            assert "site-alerting" not in first
            await quiet(stream)
            now = utc_now()
            raised, _ = await asyncio.to_thread(
                alerts_store.raise_and_clear,
                ingesting.engine,
                [NewAlert("edge_offline", "site-alerting", "", now, "offline for 20 min")],
                [],
                now,
                notify=False,
            )
            shown = await stream.until("open", "site-alerting")
            assert 'data-kind="edge_offline" data-state="open"' in shown
            await asyncio.to_thread(
                alerts_store.raise_and_clear,
                ingesting.engine,
                [],
                [Clearing(raised[0][0], "back online")],
                utc_now(),
                notify=False,
            )
            cleared = await stream.until("cleared", "back online")
            assert 'data-state="cleared"' in cleared
        finally:
            stream.cancel()


async def quiet(stream: Stream, for_seconds: float = 2.0) -> None:
    """Until the page has been sent nothing for `for_seconds`: what comes next comes
    from the alert."""
    while True:
        try:
            async with asyncio.timeout(for_seconds):
                await stream.received.get()
        except TimeoutError:
            return
