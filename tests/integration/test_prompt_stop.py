"""Stopping is prompt in every combination of the demo chargers and the cloud link, with
the settings a new user has (config.example.toml's defaults: a 10 s ack timeout, a 30 s
keepalive, local lists pushed, the local API and the file server on): demo chargers
pending or accepted, times sync off, the cloud up, the broker up without an aggregator,
the broker down, the broker unreachable. test_shutdown.py brings one daemon at a time
into one state; here the ten daemons start together (start-up is the slow part) and are
stopped one after another, so that each stop is timed on a machine otherwise as idle as
it gets. Each must send STOPPING=1 at once, exit 0 within 5 s with a last line saying it
stopped, and keep what it acknowledged."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiomqtt
import pytest

from tests.conftest import CLOUD_API_TOKEN, RunningCloud, StartCloud
from tests.doubles.blackhole import blackhole_address, blackholes_available
from tests.integration.test_shutdown import (  # noqa: F401 (the cloud_process fixture)
    FORCED,
    STOPPING_WITHIN,
    Charged,
    CloudDaemon,
    Stopped,
    _signal_and_wait,
    acks_until,
    assert_stopped_cleanly,
    batch,
    charge,
    cloud_process,
    toml,
)
from tests.mosquitto import Mosquitto
from tests.ports import free_port
from tests.processes import EdgeService
from tests.waiting import eventually

Demo = Literal["pending", "accepted"]
Link = Literal["off", "cloud", "no-aggregator", "broker-down", "unreachable"]
DEMOS: tuple[Demo, ...] = ("pending", "accepted")
LINKS: tuple[Link, ...] = ("off", "cloud", "no-aggregator", "broker-down", "unreachable")
# What the daemon logs when it cancels a task that did not end by itself after the stop.
CANCELLED = "cancelled, still running"


class Combination(EdgeService):
    """One `ocpp-edge run` with the example's defaults, the demo chargers and a link."""

    def __init__(self, demo: Demo, link: Link, directory: Path) -> None:
        super().__init__(directory)
        self.demo = demo
        self.link = link
        self.ocpp_port = free_port()
        self.charged: Charged | None = None

    @property
    def name(self) -> str:
        return f"{self.demo}-{self.link}"

    @property
    def edge_id(self) -> str:
        return f"site-{self.name}"

    def start(self, sync: dict[str, Any] | None) -> None:
        sections: dict[str, Any] = {
            # Only what must differ per daemon (ports, paths) and the combination itself.
            "ocpp": {"host": "127.0.0.1", "port": self.ocpp_port},
            "store": {"path": str(self.database)},
            "api": {"port": free_port()},
            "files": {"host": "127.0.0.1", "port": free_port(), "directory": "files"},
            "demo": {"chargers": 3},
        }
        if self.demo == "accepted":
            sections["ocpp"]["unknown_chargers"] = "accept"
        if sync is not None:
            sections["sync"] = {"edge_id": self.edge_id} | sync
        self.start_with_config(toml(sections))

    async def stop(self, number: int) -> Stopped:
        return await _signal_and_wait(self.process, number, self.notify)


@dataclass
class Links:
    """Where each kind of link points: a broker with an aggregator, one without, a port
    nothing listens on, an address that never answers."""

    cloud: RunningCloud
    with_aggregator: Mosquitto
    without_aggregator: Mosquitto
    blackhole: str

    def sync(self, link: Link) -> dict[str, Any] | None:
        if link == "off":
            return None
        if link == "cloud":
            return {"broker_host": "127.0.0.1", "broker_port": self.with_aggregator.port}
        if link == "no-aggregator":
            return {"broker_host": "127.0.0.1", "broker_port": self.without_aggregator.port}
        if link == "broker-down":
            return {"broker_host": "127.0.0.1", "broker_port": free_port()}
        return {"broker_host": self.blackhole, "broker_port": 1883}


async def bring_into_state(edge: Combination, stack: AsyncExitStack) -> None:
    """The demo chargers connected (and, accepted, pushed their local lists); the link
    doing what its kind does; an outside charger's readings answered where chargers are
    accepted."""
    registration = "pending" if edge.demo == "pending" else "accepted"
    connected = (
        "SELECT count(*) FROM chargers WHERE id LIKE 'demo-%' AND connected = 1"
        f" AND registration = '{registration}'"
    )
    await eventually(lambda: edge.query(connected)[0][0] == 3, within=60)
    if edge.demo == "accepted":
        url = f"ws://127.0.0.1:{edge.ocpp_port}/ocpp"
        edge.charged = await charge(stack, url, "CP-1")
    if edge.link == "cloud":
        acked = "SELECT acked_seq FROM sync_state"
        await eventually(lambda: edge.query(acked)[0][0] > 0, within=60)
    elif edge.link == "no-aggregator":
        # Up and sending; no acknowledgement ever comes (ack_timeout: 10 s).
        await eventually(lambda: edge.logged("cloud link up"), within=60)
    elif edge.link == "broker-down":
        await eventually(lambda: edge.logged("cloud link to"), within=60)


def assert_every_part_ended_by_itself(lines: list[str]) -> None:
    """No task had to be cancelled after the grace period: each watched the stop (a
    connect waiting for a broker that never answers included)."""
    cancelled = [line for line in lines if CANCELLED in line]
    assert not cancelled, cancelled


def check_kept(edge: Combination, cloud: RunningCloud) -> None:
    """The demo chargers marked disconnected (the store's last writes), the outside
    charger's answered readings, and every event the cloud acknowledged in the cloud."""
    rows = edge.query("SELECT id, connected FROM chargers WHERE id LIKE 'demo-%' ORDER BY id")
    assert rows == [(f"demo-{n}", 0) for n in (1, 2, 3)], edge.name
    if edge.charged is not None:
        stored = edge.query(
            f"SELECT wh FROM meter_values WHERE transaction_id = {edge.charged.transaction_id}"
            " ORDER BY id"
        )
        assert [row[0] for row in stored] == edge.charged.readings, edge.name
    if edge.link != "off":
        acked = edge.query("SELECT acked_seq FROM sync_state")[0][0]
        with cloud.engine.connect() as connection:
            stored_seqs = connection.exec_driver_sql(
                "SELECT count(*) FROM events WHERE edge_id = ? AND seq <= ?", (edge.edge_id, acked)
            ).scalar_one()
        assert stored_seqs == acked, edge.name
        if edge.link != "cloud":
            assert acked == 0, edge.name
            assert edge.query("SELECT count(*) FROM outbox")[0][0] > 0, edge.name


@pytest.fixture
async def combinations(tmp_path: Path) -> AsyncIterator[list[Combination]]:
    made = [
        Combination(demo, link, tmp_path / f"{demo}-{link}") for demo in DEMOS for link in LINKS
    ]
    yield made
    for edge in made:
        edge.close()


async def test_every_combination_of_demo_chargers_and_cloud_link_stops_within_5_seconds(
    combinations: list[Combination],
    broker: Mosquitto,
    start_cloud: StartCloud,
    tmp_path: Path,
) -> None:
    if not blackholes_available():
        pytest.skip("needs root to make a network namespace")
    lonely = Mosquitto(tmp_path / "lonely-broker")
    lonely.start()
    try:
        async with AsyncExitStack() as stack:
            cloud = await start_cloud(broker)
            address = stack.enter_context(blackhole_address())
            links = Links(cloud, broker, lonely, address)
            for edge in combinations:
                edge.start(links.sync(edge.link))
            await asyncio.gather(*(edge.ready(within=90) for edge in combinations))
            await asyncio.gather(*(bring_into_state(edge, stack) for edge in combinations))
            failures = []
            for number, edge in enumerate(combinations):
                sent = signal.SIGTERM if number % 2 == 0 else signal.SIGINT
                stopped = await edge.stop(sent)
                try:
                    assert_stopped_cleanly(stopped, edge.lines(), edge.tail())
                    assert stopped.stopping_after is not None
                    assert stopped.stopping_after < STOPPING_WITHIN
                    assert_every_part_ended_by_itself(edge.lines())
                except AssertionError as error:
                    failures.append(f"{edge.name} ({sent.name}): {error}")
                    continue
                check_kept(edge, cloud)
            assert not failures, "\n\n".join(failures)
    finally:
        lonely.stop()


# -- the aggregator ---------------------------------------------------------------------------


def cloud_with_broker_at(cloud: CloudDaemon, host: str) -> None:
    """Point the aggregator's config at another broker host (the port stays)."""
    config = cloud.daemon.config
    config.write_text(
        config.read_text().replace('broker_host = "127.0.0.1"', f'broker_host = "{host}"')
    )


async def upload_under_way(api_port: int, stack: AsyncExitStack) -> None:
    """A firmware image's PUT, its body cut off after 100 kB of the 10 MB it declares:
    the cloud is streaming it to disk when the signal comes."""
    _, uploading = await asyncio.open_connection("127.0.0.1", api_port)
    stack.callback(uploading.close)
    head = (
        "PUT /api/firmware/cp-9.bin?version=9&target=*/* HTTP/1.1\r\nHost: cloud\r\n"
        f"Authorization: Bearer {CLOUD_API_TOKEN}\r\nContent-Length: 10000000\r\n\r\n"
    ).encode()
    uploading.write(head + b"x" * 100_000)
    await uploading.drain()


def upload_files(cloud: CloudDaemon) -> list[Path]:
    return list((cloud.store.parent / "firmware").glob(".upload-*"))


def firmware_images(cloud: CloudDaemon) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(cloud.store, timeout=20)) as connection:
        return list(connection.execute("SELECT name FROM firmware_images"))


async def test_the_aggregator_stops_within_5_seconds_with_the_broker_unreachable(
    tmp_path: Path,
) -> None:
    if not blackholes_available():
        pytest.skip("needs root to make a network namespace")
    with blackhole_address() as address:
        cloud = CloudDaemon(tmp_path / "cloud", 1883)
        cloud_with_broker_at(cloud, address)
        try:
            cloud.start()
            # Its connect waits for an answer that never comes (for 5 s: the signal comes
            # during the first).
            await asyncio.sleep(1.0)
            stopped = await cloud.stop(signal.SIGTERM)
        finally:
            cloud.daemon.kill()
    assert_stopped_cleanly(stopped, cloud.lines(), "\n".join(cloud.lines()[-30:]))
    assert_every_part_ended_by_itself(cloud.lines())


async def test_the_aggregator_stops_within_5_seconds_with_an_upload_under_way(
    cloud_process: CloudDaemon,  # noqa: F811
) -> None:
    cloud_process.start()
    acked: list[int] = []
    async with AsyncExitStack() as stack:
        edge = await stack.enter_async_context(
            aiomqtt.Client("127.0.0.1", cloud_process.broker_port, identifier="e1")
        )
        await edge.subscribe(cloud_process.topics.ack, qos=1)
        await eventually(lambda: any("taking events" in line for line in cloud_process.lines()))
        await edge.publish(cloud_process.topics.events, batch(1), qos=1)
        await acks_until(edge, 1, acked)
        await upload_under_way(cloud_process.api_port, stack)
        await eventually(lambda: bool(upload_files(cloud_process)), within=10)
        stopped = await cloud_process.stop(signal.SIGINT)
    lines = cloud_process.lines()
    assert_stopped_cleanly(stopped, lines, "\n".join(lines[-30:]))
    assert cloud_process.stored_seqs() == acked == [1]
    assert firmware_images(cloud_process) == [], "a half-received image is not offered"
    # Its partial file is removed by the stop (the request's own cleanup), or else by the
    # next start: the cleanup runs in a worker thread the stop does not always see end.
    cloud_process.start()
    assert upload_files(cloud_process) == []


async def test_a_second_signal_ends_the_aggregator_at_once_naming_what_had_not_stopped(
    cloud_process: CloudDaemon,  # noqa: F811
) -> None:
    cloud_process.start()
    async with AsyncExitStack() as stack:
        await upload_under_way(cloud_process.api_port, stack)
        await eventually(lambda: bool(upload_files(cloud_process)), within=10)
        process = cloud_process.daemon.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        # The upload is in its 1 s grace period: a second signal ends it all.
        await eventually(
            lambda: any("SIGTERM: stopping" in line for line in cloud_process.lines()), within=2
        )
        stopped = await _signal_and_wait(process, signal.SIGTERM, None)
    lines = cloud_process.lines()
    assert stopped.seconds is not None and stopped.seconds < 2.0, "\n".join(lines[-30:])
    assert stopped.status == 1
    (last,) = [line for line in lines if f"SIGTERM again: {FORCED}" in line]
    assert "tasks " in last and "cloud-api (" in last
    assert firmware_images(cloud_process) == []
    # The upload's partial file outlived the forced exit; the next start removes it.
    assert len(upload_files(cloud_process)) == 1
    cloud_process.start()
    assert upload_files(cloud_process) == []
    assert any("removed 1 firmware uploads cut off" in line for line in cloud_process.lines())
