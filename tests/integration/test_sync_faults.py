"""The sync guarantees under faults, with real processes: the edge daemon, mosquitto and
the aggregator, each killed with SIGKILL at some point of a stream of events. Every event
the edge acknowledged to a charger must reach the cloud exactly once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from cloud.store.database import open_store
from cloud.store.schema import edges, events
from tests.conftest import CLOUD_API_TOKEN, PostgresServer
from tests.mosquitto import Mosquitto
from tests.processes import Daemon, Storm, cloud_daemon, edge_daemon, outbox_size, wait_for_port
from tests.waiting import eventually

EDGE = "site-faults"


@pytest.fixture
def stack(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[Daemon, int, Path, Daemon, str]]:
    """An edge and an aggregator (SQLite) as processes; stopped at the end."""
    edge, ocpp_port, database = edge_daemon(tmp_path / "edge", EDGE, broker.port)
    store_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    cloud, _ = cloud_daemon(tmp_path / "cloud", store_url, broker.port)
    cloud.start()
    edge.start()
    wait_for_port(ocpp_port)
    yield edge, ocpp_port, database, cloud, store_url
    edge.stop()
    cloud.stop()


def cloud_markers(engine: Engine) -> list[str]:
    """The `info` marker of every charger.status event the cloud stored, in seq order."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(events.c.data)
            .where(events.c.edge_id == EDGE, events.c.kind == "charger.status")
            .order_by(events.c.seq)
        ).scalars()
        return [data["info"] for data in rows if isinstance(data, dict) and "info" in data]


def cloud_seqs(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(events.c.seq).where(events.c.edge_id == EDGE).order_by(events.c.seq)
            ).scalars()
        )


def status_events(engine: Engine) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(events)
        return int(
            connection.execute(
                query.where(events.c.edge_id == EDGE, events.c.kind == "charger.status")
            ).scalar_one()
        )


async def delivered(engine: Engine, storm: Storm, within: float = 60.0) -> list[str]:
    """Wait until every acknowledged marker is in the cloud; the markers stored."""
    # Counting is cheap; reading every marker is not, so only once the count is there.
    await eventually(lambda: status_events(engine) >= len(storm.acknowledged), within=within)
    await eventually(lambda: storm.acknowledged <= set(cloud_markers(engine)), within=10)
    return cloud_markers(engine)


def assert_exactly_once_in_order(engine: Engine, storm: Storm, markers: list[str]) -> None:
    assert len(markers) == len(set(markers)), "an event was stored twice"
    assert storm.acknowledged <= set(markers), "an acknowledged event was lost"
    seqs = cloud_seqs(engine)
    assert seqs == list(range(1, len(seqs) + 1)), "the cloud's events have a gap"
    # Per charger, the markers arrive in the order they were sent.
    by_charger: dict[str, list[int]] = {}
    for marker in markers:
        charger, number = marker.rsplit(":", 1)
        by_charger.setdefault(charger, []).append(int(number))
    assert all(numbers == sorted(numbers) for numbers in by_charger.values())


async def storm_through(
    stack: tuple[Daemon, int, Path, Daemon, str], fault: Callable[[], Awaitable[None]]
) -> None:
    """6,000 StatusNotifications with `fault` striking once 500 are acknowledged; then
    every acknowledged one must reach the cloud exactly once, in order."""
    _, ocpp_port, database, _, store_url = stack
    storm = Storm(f"ws://127.0.0.1:{ocpp_port}/ocpp", chargers=10, per_charger=600)
    running = asyncio.create_task(storm.run())
    await eventually(lambda: len(storm.acknowledged) > 500, within=30)
    await fault()
    await running
    engine = open_store(store_url)
    markers = await delivered(engine, storm)
    assert_exactly_once_in_order(engine, storm, markers)
    await eventually(lambda: outbox_size(database) == 0, within=20)
    engine.dispose()


async def test_broker_killed_mid_stream_and_restarted_empty(
    stack: tuple[Daemon, int, Path, Daemon, str], broker: Mosquitto
) -> None:
    async def kill_broker() -> None:
        broker.kill()
        await asyncio.sleep(1.0)
        broker.start(empty=True)

    await storm_through(stack, kill_broker)


async def test_edge_killed_mid_stream_and_restarted(
    stack: tuple[Daemon, int, Path, Daemon, str],
) -> None:
    edge = stack[0]

    async def kill_edge() -> None:
        edge.kill()
        await asyncio.sleep(0.5)
        edge.start()

    await storm_through(stack, kill_edge)


async def test_aggregator_killed_before_it_acknowledges(
    stack: tuple[Daemon, int, Path, Daemon, str],
) -> None:
    cloud = stack[3]

    async def kill_aggregator_twice() -> None:
        for _ in range(2):
            cloud.kill()
            await asyncio.sleep(0.5)
            cloud.start()
            await asyncio.sleep(1.0)

    await storm_through(stack, kill_aggregator_twice)


async def test_broker_down_for_100000_events(
    stack: tuple[Daemon, int, Path, Daemon, str], broker: Mosquitto
) -> None:
    _, ocpp_port, database, _, store_url = stack
    await eventually(lambda: outbox_size(database) == 0, within=20)
    broker.stop()
    storm = Storm(f"ws://127.0.0.1:{ocpp_port}/ocpp", chargers=50, per_charger=2000)
    await storm.run()
    assert len(storm.acknowledged) == 100_000
    assert outbox_size(database) >= 100_000  # all of it waits on the edge's disk
    broker.start(empty=True)
    engine = open_store(store_url)
    markers = await delivered(engine, storm, within=240)
    assert_exactly_once_in_order(engine, storm, markers)
    await eventually(lambda: outbox_size(database) == 0, within=30)
    engine.dispose()


async def test_two_aggregator_replicas_share_the_work(
    tmp_path: Path, broker: Mosquitto, postgres: PostgresServer
) -> None:
    url = postgres.create_database().render_as_string(hide_password=False)
    engine = open_store(url)
    replicas = [
        cloud_daemon(tmp_path / f"cloud-{n}", url, broker.port, client_id=f"replica-{n}")
        for n in (1, 2)
    ]
    for replica, _ in replicas:
        replica.start()
    edge, ocpp_port, _ = edge_daemon(tmp_path / "edge", EDGE, broker.port)
    edge.start()
    try:
        wait_for_port(ocpp_port)
        for _, api_port in replicas:
            wait_for_port(api_port)
        storm = Storm(f"ws://127.0.0.1:{ocpp_port}/ocpp", chargers=10, per_charger=300)
        await storm.run()
        markers = await delivered(engine, storm)
        assert_exactly_once_in_order(engine, storm, markers)
        token = {"Authorization": f"Bearer {CLOUD_API_TOKEN}"}
        async with httpx.AsyncClient(timeout=5, headers=token) as client:
            stored = [
                (await client.get(f"http://127.0.0.1:{api_port}/api/stats")).json()[
                    "batches_stored"
                ]
                for _, api_port in replicas
            ]
        assert all(count > 0 for count in stored), f"one replica did nothing: {stored}"
        with engine.connect() as connection:
            last = connection.execute(select(edges.c.last_seq).where(edges.c.id == EDGE))
            assert last.scalar_one() == len(cloud_seqs(engine))
    finally:
        edge.stop()
        for replica, _ in replicas:
            replica.stop()
        engine.dispose()
