"""The Sessions page live, for real: two aggregators on one store (SQLite, PostgreSQL)
and a real broker. An edge's transaction synced through one replica shows in the
sessions list pushed by the other, started, then stopped, and a new one on top; a user
of another fleet is never pushed it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.publish as mqtt_publish
import pytest
from sqlalchemy import Engine

from cloud.store import fleets
from cloud.store.sessions import get_session
from contract.protocol import Topics
from tests.cloud import payloads
from tests.cloud.test_web_live import FAST_LIVE, Stream
from tests.cloud.web import Browser, add_user
from tests.conftest import RunningCloud, StartCloud
from tests.mosquitto import Mosquitto
from tests.postgres import PostgresServer
from tests.waiting import eventually

EDGE = "site-live"
ROW = re.compile(r'<tr class="session" data-edge="([^"]+)" data-transaction="(-?\d+)">')


async def publish_events(broker: Mosquitto, first_seq: int, *datas: dict[str, Any]) -> None:
    """A batch from the edge, as its sync link publishes it."""
    events = [payloads.event(first_seq + index, data) for index, data in enumerate(datas)]
    await asyncio.to_thread(
        mqtt_publish.single,
        Topics(EDGE).events,
        json.dumps({"edge_id": EDGE, "events": events}),
        qos=1,
        hostname="127.0.0.1",
        port=broker.port,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def replicas(
    request: pytest.FixtureRequest, broker: Mosquitto, start_cloud: StartCloud, tmp_path: Path
) -> tuple[RunningCloud, RunningCloud]:
    """(ingesting, serving): two aggregators on one store, each its own MQTT client; the
    serving one listens to no edge, so every change reaches it through the store."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/shared.db"
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres")
        url = postgres.create_database().render_as_string(hide_password=False)
    ingesting = await start_cloud(
        broker, store_url=url, web=FAST_LIVE, mqtt={"client_id": "ingesting"}
    )
    serving = await start_cloud(
        broker,
        store_url=url,
        web=FAST_LIVE,
        mqtt={"client_id": "serving", "topic_prefix": "nobody-publishes-here/v1"},
    )
    return ingesting, serving


@pytest.fixture
async def signed_in(replicas: tuple[RunningCloud, RunningCloud]) -> AsyncIterator[Browser]:
    ingesting, serving = replicas
    add_user(ingesting.engine, "ann@acme.test", "viewer", 1)
    async with httpx.AsyncClient(base_url=serving.api_url, timeout=30) as http:
        person = Browser(http)
        assert (await person.sign_in("ann@acme.test")).status_code == 303
        yield person


def stopped(engine: Engine) -> bool:
    session = get_session(engine, EDGE, 1)
    return session is not None and not session.running


def rows(html: str) -> list[tuple[str, int]]:
    return [(edge, int(transaction)) for edge, transaction in ROW.findall(html)]


async def test_a_synced_transaction_shows_in_the_live_sessions_list(
    broker: Mosquitto, replicas: tuple[RunningCloud, RunningCloud], signed_in: Browser
) -> None:
    ingesting, serving = replicas
    await publish_events(broker, 1, payloads.transaction_started(1, id_tag="CARD-LIVE"))
    await eventually(lambda: get_session(ingesting.engine, EDGE, 1) is not None, within=20)
    page = await signed_in.get(f"/web/sessions?edge={EDGE}")
    # The first page's list is live; the form still works without it.
    assert f'sse-connect="/web/live?view=sessions&amp;edge={EDGE}"' in page.text
    assert 'sse-swap="sessions"' in page.text
    async with signed_in.client.stream("GET", f"/web/live?view=sessions&edge={EDGE}") as answer:
        assert answer.status_code == 200
        stream = Stream(answer)
        try:
            first = await stream.until("sessions", 'data-transaction="1"')
            assert "running" in first and "CARD-LIVE" in first
            await publish_events(broker, 2, payloads.transaction_stopped(1, 7_500))
            stopped = await stream.until("sessions", "7.500 kWh")
            assert rows(stopped) == [(EDGE, 1)] and "2026-03-01 11:00:00Z" in stopped
            await publish_events(
                broker,
                3,
                payloads.transaction_started(2, started_at="2026-03-01T12:00:00Z"),
            )
            newer = await stream.until("sessions", 'data-transaction="2"')
            assert rows(newer) == [(EDGE, 2), (EDGE, 1)]
        finally:
            stream.cancel()
    assert serving.site.aggregator.batches_stored == 0  # it stored nothing itself


async def test_another_fleets_user_is_never_pushed_the_sessions(
    broker: Mosquitto, replicas: tuple[RunningCloud, RunningCloud]
) -> None:
    ingesting, serving = replicas
    bolt = fleets.add_fleet(ingesting.engine, "Bolt").fleet_id
    add_user(ingesting.engine, "bob@bolt.test", "viewer", bolt)
    await publish_events(broker, 1, payloads.transaction_started(1))
    await eventually(lambda: get_session(ingesting.engine, EDGE, 1) is not None, within=20)
    async with httpx.AsyncClient(base_url=serving.api_url, timeout=30) as http:
        bob = Browser(http)
        assert (await bob.sign_in("bob@bolt.test")).status_code == 303
        assert (await bob.get(f"/web/live?view=sessions&edge={EDGE}")).status_code == 404
        async with bob.client.stream("GET", "/web/live?view=sessions") as answer:
            stream = Stream(answer)
            try:
                first = await stream.until("sessions", "<table")
                assert rows(first) == []
                await publish_events(broker, 2, payloads.transaction_stopped(1, 1_000))
                await eventually(lambda: stopped(ingesting.engine), within=20)
                # Bolt's page is refreshed by no edge of Bolt: nothing comes, or nothing of
                # the other fleet's.
                try:
                    again = await stream.until("sessions", "<table", within=3)
                    assert rows(again) == []
                except TimeoutError:
                    pass
            finally:
                stream.cancel()
