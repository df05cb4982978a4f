"""Fixtures that run the real edge daemon on loopback with a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from cloud.app import CloudSite, run_cloud
from cloud.firmware import public_key_text
from cloud.settings import CloudSettings
from cloud.store import fleet
from cloud.store.database import open_store
from edge.app import Site, run_edge
from edge.hardware import Hardware
from edge.ocpp.server import OcppServer
from edge.settings import Settings
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from edge.site import SiteContext
from tests.mosquitto import Mosquitto
from tests.ports import free_port
from tests.postgres import PostgresServer, PostgresUnavailable
from tests.waiting import eventually


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The image tests last: with OCPP_EDGE_IMAGE_BUILD they read a build that may still
    be running in the background while the rest of the suite runs
    (tests/image/image_files.py)."""
    items.sort(key=lambda item: item.get_closest_marker("image") is not None)


# The token every test aggregator's REST API asks for (it refuses to start without one).
CLOUD_API_TOKEN = "test-fleet-token"


@dataclass
class RunningEdge:
    settings: Settings
    server: OcppServer
    db_path: Path
    api_port: int
    site: Site
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def context(self) -> SiteContext:
        """What the site's features are given: for tests that call them directly."""
        return self.server.context

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}{self.settings.ocpp.path_prefix}"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Read the store from a separate connection, as any other process would."""
        connection = sqlite3.connect(self.db_path)
        connection.row_factory = sqlite3.Row
        try:
            return list(connection.execute(sql, params))
        finally:
            connection.close()

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Write as another process would (the CLI): off the loop, waiting for the lock."""

        def write() -> None:
            connection = sqlite3.connect(self.db_path, isolation_level=None, timeout=10)
            try:
                connection.execute(sql, params)
            finally:
                connection.close()

        await asyncio.to_thread(write)


StartEdge = Callable[..., Awaitable[RunningEdge]]


async def stop_edge(edge: RunningEdge) -> None:
    """Stop the daemon as SIGTERM would, and wait until it is down."""
    edge.stop.set()
    await asyncio.wait_for(edge.task, timeout=15)


def make_settings(
    tmp_path: Path,
    *,
    with_api: bool = False,
    files: dict[str, Any] | None = None,
    smart_charging: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
    **ocpp: Any,
) -> Settings:
    ocpp = {
        "host": "127.0.0.1",
        "port": free_port(),
        "unknown_chargers": "accept",
        # Tests that count commands send their own; test_local_list_push turns it on.
        "push_local_list": False,
        **ocpp,
    }
    sections = dict(sections or {})
    return Settings(
        ocpp=ocpp,
        store={"path": tmp_path / "edge.db"},
        api={"port": free_port() if with_api else 0, **sections.pop("api", {})},
        files={"directory": tmp_path / "files", "port": 0, **(files or {})},
        smart_charging=smart_charging or {},
        **{"taps": {"socket": tmp_path / "taps.sock"}, **sections},
    )


@pytest.fixture
async def start_edge(tmp_path: Path) -> AsyncIterator[StartEdge]:
    """`edge = await start_edge(with_api=True, unknown_chargers="pending", ...)`; stopped
    at teardown. `sections` gives whole sections (`{"readers": [...]}`); other keyword
    arguments are `[ocpp]` settings."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(
        *,
        with_api: bool = False,
        files: dict[str, Any] | None = None,
        smart_charging: dict[str, Any] | None = None,
        sections: dict[str, Any] | None = None,
        hardware: Hardware | None = None,
        **ocpp: Any,
    ) -> RunningEdge:
        settings = make_settings(
            tmp_path,
            with_api=with_api,
            files=files,
            smart_charging=smart_charging,
            sections=sections,
            **ocpp,
        )
        stop = asyncio.Event()
        ready: asyncio.Future[Site] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            run_edge(settings, stop=stop, on_ready=ready.set_result, hardware=hardware)
        )
        running.append((stop, task))
        waiting: list[asyncio.Future[Any]] = [ready, task]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises what stopped the edge from starting
        site = ready.result()
        api_port = site.api.port if site.api else 0
        return RunningEdge(settings, site.ocpp, settings.store.path, api_port, site, stop, task)

    yield start
    for stop, task in running:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


@pytest.fixture
async def edge(start_edge: StartEdge) -> RunningEdge:
    return await start_edge()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port, anonymous, with persistence."""
    mosquitto = Mosquitto(tmp_path / "broker")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """$OCPP_TEST_POSTGRES_URL's server, or a private cluster; this run's databases are
    dropped (and a private cluster stopped) at the end."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as error:
        pytest.fail(str(error))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_engine(postgres: PostgresServer) -> Iterator[Engine]:
    """One migrated database for the run; `engine` empties it before each test."""
    engine = open_store(postgres.create_database().render_as_string(hide_password=False))
    yield engine
    engine.dispose()


@dataclass
class RunningCloud:
    settings: CloudSettings
    site: CloudSite
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def engine(self) -> Engine:
        return self.site.engine

    @property
    def api_url(self) -> str:
        assert self.site.api is not None
        return f"http://127.0.0.1:{self.site.api.port}"

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api.token}"}


StartCloud = Callable[..., Awaitable[RunningCloud]]


@pytest.fixture
async def start_cloud(tmp_path: Path) -> AsyncIterator[StartCloud]:
    """`cloud = await start_cloud(broker, store_url=...)`: the aggregator in this event
    loop, SQLite in tmp_path by default; stopped at teardown."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    started = 0

    async def start(
        broker: Mosquitto, *, store_url: str | None = None, **sections: Any
    ) -> RunningCloud:
        nonlocal started
        directory = tmp_path / f"cloud-{started}"
        started += 1
        directory.mkdir()
        mqtt = {"broker_host": "127.0.0.1", "broker_port": broker.port, "keepalive": 5}
        settings = CloudSettings(
            store={"url": store_url or f"sqlite:///{directory / 'cloud.db'}"},
            mqtt=mqtt | sections.pop("mqtt", {}),
            api={"port": free_port(), "token": CLOUD_API_TOKEN} | sections.pop("api", {}),
            desired={"resend_interval": 1.0},
            firmware={
                "directory": directory / "firmware",
                "signing_key": str(directory / "fleet.key"),
                **sections.pop("firmware", {}),
            },
            **sections,
        )
        stop = asyncio.Event()
        ready: asyncio.Future[CloudSite] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(run_cloud(settings, stop=stop, on_ready=ready.set_result))
        running.append((stop, task))
        started_or_ended: list[asyncio.Future[Any]] = [ready, task]
        await asyncio.wait(started_or_ended, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            running.remove((stop, task))
            task.result()  # raises what stopped the aggregator from starting
        return RunningCloud(settings, ready.result(), stop, task)

    yield start
    for stop, task in running:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


# -- a site syncing with a cloud, as several end-to-end tests set it up ---------------------


def sync_section(
    edge_id: str, broker: Mosquitto, cloud: RunningCloud | None = None
) -> dict[str, Any]:
    """An edge's [sync] settings for the test broker, quick to report; with `cloud`, the
    fleet's firmware key too."""
    sync: dict[str, Any] = {
        "edge_id": edge_id,
        "broker_host": "127.0.0.1",
        "broker_port": broker.port,
        "keepalive": 5,
        "status_interval": 5,
    }
    if cloud is not None:
        sync["firmware_public_key"] = public_key_text(cloud.site.signing_key)
    return sync


@asynccontextmanager
async def booted_charger(
    url: str, config: SimulatedChargerConfig, charger_id: str = "CP1"
) -> AsyncIterator[SimulatedCharger]:
    """A simulated charger connected to the edge whose OCPP endpoint is `url`
    (ws://HOST:PORT/ocpp), booted."""
    async with connect(f"{url}/{charger_id}", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        charger = SimulatedCharger(charger_id, connection, config)
        listener = asyncio.create_task(charger.start())
        try:
            await charger.boot()
            yield charger
        finally:
            listener.cancel()


@asynccontextmanager
async def charger_at(
    edge: RunningEdge, config: SimulatedChargerConfig, charger_id: str = "CP1"
) -> AsyncIterator[SimulatedCharger]:
    """A simulated charger connected to `edge`, booted, its first connector Available."""
    async with booted_charger(edge.url, config, charger_id) as charger:
        await charger.send_status(1, "Available")
        yield charger


async def transaction_reaches_the_cloud(
    url: str, cloud: RunningCloud, edge_id: str, id_tag: str, within: float
) -> None:
    """A charger boots at the edge whose OCPP endpoint is `url`, starts a transaction with
    the card `id_tag` (accepted) and stops it; the cloud then holds that transaction,
    finished, as the edge's only one (within `within` seconds)."""
    async with booted_charger(url, SimulatedChargerConfig(connectors=1)) as charger:
        transaction_id, accepted = await charger.start_transaction(1, id_tag)
        assert accepted == "Accepted"
        await charger.stop_transaction(1)

        def transactions() -> list[fleet.TransactionView]:
            return fleet.list_transactions(cloud.engine, edge_id)

        await eventually(lambda: bool(transactions()) and not transactions()[0].running, within)
    (stored,) = transactions()
    assert (stored.transaction_id, stored.id_tag) == (transaction_id, id_tag)


STORES = ["sqlite", "postgresql"]


async def cloud_on_store(
    request: pytest.FixtureRequest, broker: Mosquitto, start_cloud: StartCloud
) -> RunningCloud:
    """The aggregator on the store a fixture parametrised with STORES names."""
    if request.param == "sqlite":
        return await start_cloud(broker)
    postgres: PostgresServer = request.getfixturevalue("postgres")
    url = postgres.create_database().render_as_string(hide_password=False)
    return await start_cloud(broker, store_url=url)
