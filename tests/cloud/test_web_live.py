"""Live pages for real: two aggregators on one store (SQLite, PostgreSQL), a real broker;
a page served by one replica is pushed what the other stored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import paho.mqtt.publish as mqtt_publish
import pytest

from cloud.store import fleets
from cloud.store.overview import fleet_edges
from contract.protocol import Topics
from tests.cloud.web import Browser, add_user, sse_events
from tests.conftest import RunningCloud, StartCloud
from tests.mosquitto import Mosquitto
from tests.postgres import PostgresServer
from tests.waiting import eventually

# The replica that serves pages listens to no edge: every change reaches it through the store.
ELSEWHERE = {"topic_prefix": "nobody-publishes-here/v1"}
FAST_LIVE = {"live_poll_interval": 0.2}


@pytest.fixture(params=["sqlite", "postgresql"])
async def replicas(
    request: pytest.FixtureRequest, broker: Mosquitto, start_cloud: StartCloud, tmp_path: Path
) -> tuple[RunningCloud, RunningCloud]:
    """(ingesting, serving): two aggregators on one store."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/shared.db"
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres")
        url = postgres.create_database().render_as_string(hide_password=False)
    ingesting = await start_cloud(broker, store_url=url, web=FAST_LIVE)
    serving = await start_cloud(broker, store_url=url, mqtt=ELSEWHERE, web=FAST_LIVE)
    return ingesting, serving


async def publish_status(broker: Mosquitto, edge_id: str, state: str) -> None:
    document = {"state": state, "backlog": 0, "software_version": "1.2.3"}
    await asyncio.to_thread(
        mqtt_publish.single,
        Topics(edge_id).status,
        json.dumps(document),
        qos=1,
        retain=True,
        hostname="127.0.0.1",
        port=broker.port,
    )


class Stream:
    """The events of one live page, read in the background."""

    def __init__(self, response: httpx.Response) -> None:
        self.received: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._task = asyncio.create_task(self._read(response))

    async def _read(self, response: httpx.Response) -> None:
        async for event in sse_events(response):
            await self.received.put(event)

    async def until(self, name: str, text: str, within: float = 20.0) -> str:
        async with asyncio.timeout(within):
            while True:
                event, data = await self.received.get()
                if event == name and text in data:
                    return data

    async def ended(self) -> None:
        await self._task

    def cancel(self) -> None:
        self._task.cancel()


@pytest.fixture
async def signed_in(replicas: tuple[RunningCloud, RunningCloud]) -> AsyncIterator[Browser]:
    ingesting, serving = replicas
    add_user(ingesting.engine, "ann@acme.test", "viewer", 1)
    async with httpx.AsyncClient(base_url=serving.api_url, timeout=30) as http:
        person = Browser(http)
        assert (await person.sign_in("ann@acme.test")).status_code == 303
        yield person


async def test_a_live_overview_shows_what_another_replica_stored(
    broker: Mosquitto, replicas: tuple[RunningCloud, RunningCloud], signed_in: Browser
) -> None:
    async with signed_in.client.stream("GET", "/web/live?view=overview") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        try:
            first = await stream.until("edges", "<table")
            assert "site-live" not in first
            await publish_status(broker, "site-live", "online")
            await stream.until("edges", 'data-edge="site-live" data-state="online"')
            await publish_status(broker, "site-live", "offline")
            offline = await stream.until("edges", 'data-edge="site-live" data-state="offline"')
            assert 'offline</span> <span class="since">since' in offline
        finally:
            stream.cancel()
    serving = replicas[1]
    assert serving.site.aggregator.batches_stored == 0  # it stored nothing itself


async def test_a_live_page_follows_its_edge_into_another_fleet_and_out_of_view(
    broker: Mosquitto, replicas: tuple[RunningCloud, RunningCloud], signed_in: Browser
) -> None:
    ingesting, _ = replicas
    await publish_status(broker, "site-moving", "online")
    async with signed_in.client.stream("GET", "/web/live?view=overview") as response:
        stream = Stream(response)
        try:
            await stream.until("edges", 'data-edge="site-moving"')
            other = fleets.add_fleet(ingesting.engine, "Elsewhere")
            await asyncio.to_thread(
                fleets.assign_edge, ingesting.engine, "site-moving", other.fleet_id
            )
            gone = await stream.until("edges", "<table")
            while "site-moving" in gone:
                gone = await stream.until("edges", "<table")
        finally:
            stream.cancel()


async def test_signing_out_ends_the_live_stream(
    broker: Mosquitto, replicas: tuple[RunningCloud, RunningCloud], signed_in: Browser
) -> None:
    async with signed_in.client.stream("GET", "/web/live?view=overview") as response:
        stream = Stream(response)
        await stream.until("totals", "Fleet default")
        await signed_in.get("/web/")
        assert (await signed_in.post("/web/logout", {})).status_code == 303
        await publish_status(broker, "site-after", "online")  # wakes the stream
        async with asyncio.timeout(20):
            await stream.ended()  # the server ended it
    assert (await signed_in.get("/web/live?view=overview")).status_code == 401


async def test_live_streams_are_bounded_per_user(
    replicas: tuple[RunningCloud, RunningCloud], signed_in: Browser
) -> None:
    limit = replicas[1].settings.web.max_live_streams_per_user
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(limit):
            response = await streams.enter_async_context(
                signed_in.client.stream("GET", "/web/live?view=overview")
            )
            assert response.status_code == 200
        refused = await signed_in.get("/web/live?view=overview")
        assert refused.status_code == 429


async def test_a_live_site_page_ends_when_its_edge_leaves_the_users_fleet(
    broker: Mosquitto,
    replicas: tuple[RunningCloud, RunningCloud],
    signed_in: Browser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ingesting, _ = replicas
    await publish_status(broker, "site-sold", "online")
    await eventually(lambda: bool(fleet_edges(ingesting.engine, 1)), within=20)
    async with signed_in.client.stream("GET", "/web/live?view=site&edge=site-sold") as response:
        assert response.status_code == 200
        stream = Stream(response)
        await stream.until("site", "site-sold")
        other = fleets.add_fleet(ingesting.engine, "Buyer")
        await asyncio.to_thread(fleets.assign_edge, ingesting.engine, "site-sold", other.fleet_id)
        async with asyncio.timeout(20):
            await stream.ended()
    assert (await signed_in.get("/web/sites/site-sold")).status_code == 404
    # Ended as a stream ends, not by an error in the server.
    server_errors = [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.name.startswith(("uvicorn", "cloud"))
    ]
    assert server_errors == []
