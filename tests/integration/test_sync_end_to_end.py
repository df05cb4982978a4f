"""A site and the cloud, for real: the edge daemon with a simulated charger, mosquitto,
and the aggregator on SQLite and on PostgreSQL. What happens at the site arrives in the
cloud's views; what the fleet manager sets through the REST API reaches the site."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from cloud.firmware import public_key_text
from cloud.store import fleet
from cloud.store.schema import charger_jobs, events
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import (
    STORES,
    RunningCloud,
    RunningEdge,
    StartCloud,
    StartEdge,
    charger_at,
    cloud_on_store,
    free_port,
    stop_edge,
)
from tests.integration.test_broker_security import AGGREGATOR, AGGREGATOR_PASSWORD, start_fleet
from tests.mosquitto import Mosquitto
from tests.waiting import eventually, eventually_answers

EDGE = "site-7"


@pytest.fixture(params=STORES)
async def cloud(
    request: pytest.FixtureRequest, broker: Mosquitto, start_cloud: StartCloud
) -> RunningCloud:
    return await cloud_on_store(request, broker, start_cloud)


@pytest.fixture
async def site(
    start_edge: StartEdge, broker: Mosquitto, cloud: RunningCloud
) -> AsyncIterator[tuple[RunningEdge, SimulatedCharger]]:
    sync = {
        "edge_id": EDGE,
        "broker_host": "127.0.0.1",
        "broker_port": broker.port,
        "keepalive": 5,
        "firmware_public_key": public_key_text(cloud.site.signing_key),
    }
    files = {"host": "127.0.0.1", "port": free_port()}
    edge = await start_edge(sections={"sync": sync}, files=files)
    async with charger_at(edge, SimulatedChargerConfig(connectors=1)) as charger:
        yield edge, charger


async def has(answer: Awaitable[Any], expected: Any) -> bool:
    return bool(await answer == expected)


def edge_view(engine: Engine) -> fleet.EdgeView | None:
    return next((e for e in fleet.list_edges(engine, datetime.now(UTC)) if e.edge_id == EDGE), None)


async def test_what_happens_at_the_site_arrives_once_in_the_cloud(
    cloud: RunningCloud, site: tuple[RunningEdge, SimulatedCharger]
) -> None:
    edge, charger = site
    await edge.execute(
        "INSERT INTO id_tags (id_tag, status, created_at, updated_at) VALUES ('CARD1', 'Accepted', 'x', 'x')"
    )
    transaction_id, _ = await charger.start_transaction(1, "CARD1")
    await charger.send_meter_values(1, 1800)
    await charger.stop_transaction(1)
    await eventually(lambda: edge.query("SELECT count(*) FROM outbox")[0][0] == 0, within=10)

    def transactions() -> list[fleet.TransactionView]:
        return fleet.list_transactions(cloud.engine, EDGE)

    await eventually(lambda: bool(transactions()) and not transactions()[0].running, within=10)
    (stored,) = transactions()
    assert (stored.transaction_id, stored.energy_wh, stored.id_tag) == (
        transaction_id,
        3600,
        "CARD1",
    )
    chargers = fleet.list_chargers(cloud.engine, EDGE)
    assert [(c.charger_id, c.connectors[0].status) for c in chargers] == [("CP1", "Available")]
    acked = edge.query("SELECT acked_seq FROM sync_state")[0][0]
    with cloud.engine.connect() as connection:
        seqs = list(
            connection.execute(
                select(events.c.seq).where(events.c.edge_id == EDGE).order_by(events.c.seq)
            ).scalars()
        )
    assert seqs == list(range(1, acked + 1))
    await eventually(lambda: (view := edge_view(cloud.engine)) is not None and view.online)
    view = edge_view(cloud.engine)
    assert view is not None and view.last_seq == acked and view.backlog is not None


async def test_fleet_manager_sets_cards_commands_and_firmware(
    cloud: RunningCloud, site: tuple[RunningEdge, SimulatedCharger]
) -> None:
    edge, charger = site
    await eventually(lambda: (view := edge_view(cloud.engine)) is not None and view.online)
    async with httpx.AsyncClient(
        base_url=cloud.api_url, headers=cloud.api_headers, timeout=10
    ) as api:
        cards = [{"id_tag": "FLEET1", "parent_id_tag": "FLEET"}, {"id_tag": "FLEET2"}]
        answer = await api.put(f"/api/edges/{EDGE}/cards", json=cards)
        assert answer.status_code == 200, answer.text
        version = answer.json()["version"]

        def edge_cards() -> set[str]:
            return {
                row[0] for row in edge.query("SELECT id_tag FROM id_tags WHERE source = 'cloud'")
            }

        await eventually(lambda: edge_cards() == {"FLEET1", "FLEET2"}, within=10)

        async def applied() -> Any:
            return (await api.get(f"/api/edges/{EDGE}/cards")).json()["applied_version"]

        await eventually_answers(lambda: has(applied(), version), within=10)

        command = {"charger_id": "CP1", "action": "unlock", "arguments": {"connectorId": 1}}
        answer = await api.post(f"/api/edges/{EDGE}/commands", json=command)
        assert answer.status_code == 200, answer.text
        command_id = answer.json()["id"]

        async def command_status() -> str:
            rows = (await api.get(f"/api/edges/{EDGE}/commands")).json()
            return str(next(row["status"] for row in rows if row["id"] == command_id))

        await eventually_answers(lambda: has(command_status(), "done"), within=10)
        sent = [row[0] for row in edge.query("SELECT action FROM commands")]
        assert sent.count("UnlockConnector") == 1

        image = bytes(range(256)) * 2000  # 512,000 bytes: two chunks
        answer = await api.put(
            "/api/firmware/cp-2.0.bin",
            params={"version": "2.0", "target": "ocpp-edge/Simulated*"},
            content=image,
        )
        assert answer.status_code == 200, answer.text
        answer = await api.post(f"/api/edges/{EDGE}/firmware/cp-2.0.bin")
        assert answer.status_code == 200, answer.text
        served = edge.settings.files.directory / "firmware" / "cp-2.0.bin"
        await eventually(lambda: served.is_file() and served.read_bytes() == image, within=15)
        # Verified on the edge: roll it out to the charger, which downloads it from the edge.
        rollout = {
            "charger_id": "CP1",
            "action": "firmware_rollout",
            "arguments": {"image": "cp-2.0.bin"},
        }
        answer = await api.post(f"/api/edges/{EDGE}/commands", json=rollout)
        assert answer.status_code == 200, answer.text
        await eventually(lambda: charger.firmware == image, within=15)
        # The charger reports the install; that report reaches the cloud too.
        installed = "SELECT count(*) FROM charger_job_status WHERE status = 'Installed'"
        await eventually(lambda: edge.query(installed)[0][0] == 1, within=15)
        await eventually(lambda: cloud_job(cloud.engine) == ("firmware", "Installed"), within=15)
        assert (await api.post("/api/edges/nowhere/firmware/cp-2.0.bin")).status_code == 404
        assert (
            await api.put("/api/firmware/..%2Fx", params={"version": "1"}, content=b"x")
        ).status_code in (404, 422)


async def test_bad_payloads_are_refused_counted_and_change_nothing(
    cloud: RunningCloud, broker: Mosquitto
) -> None:
    import aiomqtt

    from contract import protocol as wire

    topics = wire.Topics("intruder")
    good = wire.EventBatch(
        edge_id="intruder",
        events=[
            wire.Event(
                seq=1,
                at="2026-01-01T00:00:00Z",
                data=wire.ChargerConnection(charger_id="X", connected=True),
            )
        ],
    ).model_dump_json()
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="intruder") as client:
        for payload in (
            b"not json",
            b'{"edge_id": "intruder", "events": [{"seq": 1}]}',
            good.replace('"intruder"', '"someone-else"', 1).encode(),
            b"x" * (cloud.settings.limits.max_payload_bytes + 1),
        ):
            await client.publish(topics.events, payload, qos=1)
        await client.publish(topics.events, good, qos=1)
        await client.publish(topics.events, good, qos=1)  # replayed: a duplicate

    def refused() -> dict[str, int]:
        return {
            r.reason: r.count
            for r in fleet.rejection_counts(cloud.engine)
            if r.source == "intruder"
        }

    await eventually(
        lambda: refused() == {"not_json": 1, "invalid": 1, "wrong_edge": 1, "too_large": 1},
        within=10,
    )
    await eventually(
        lambda: (
            (view := edge_view_of(cloud.engine, "intruder")) is not None
            and view.duplicate_events == 1
        )
    )
    with cloud.engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(events)).scalar_one()
    assert count == 1


def edge_view_of(engine: Engine, edge_id: str) -> fleet.EdgeView | None:
    return next(
        (e for e in fleet.list_edges(engine, datetime.now(UTC)) if e.edge_id == edge_id), None
    )


async def test_real_links_through_the_shipped_broker_with_tls_and_acl(
    tmp_path: Path, start_edge: StartEdge, start_cloud: StartCloud
) -> None:
    """The edge's link with its client certificate (CN = edge id) on the TLS listener, the
    aggregator with its password on loopback, the shipped config and ACL unchanged."""
    fleet = start_fleet(tmp_path / "fleet")
    try:
        identity = fleet.edge_ca.issue(EDGE)
        cloud = await start_cloud(
            fleet.broker,
            mqtt={
                "broker_host": "127.0.0.1",
                "broker_port": fleet.broker.port,
                "username": AGGREGATOR,
                "password": AGGREGATOR_PASSWORD,
            },
        )
        sync = {
            "edge_id": EDGE,
            "broker_host": "localhost",
            "broker_port": fleet.broker.tls_port,
            "tls_ca": str(fleet.edge_ca.files.certificate),
            "tls_certificate": str(identity.certificate),
            "tls_private_key": str(identity.key),
        }
        edge = await start_edge(sections={"sync": sync})
        async with connect(f"{edge.url}/CP1", subprotocols=[Subprotocol("ocpp1.6")]) as link:
            charger = SimulatedCharger("CP1", link, SimulatedChargerConfig(connectors=1))
            listener = asyncio.create_task(charger.start())
            await charger.boot()
            await eventually(lambda: bool(fleet_chargers(cloud.engine)), within=15)
            listener.cancel()
        await eventually(lambda: edge.query("SELECT count(*) FROM outbox")[0][0] == 0)
        view = edge_view(cloud.engine)
        assert view is not None and view.online and view.last_seq >= 2
        # Both ends go before the broker does.
        await stop_edge(edge)
        cloud.stop.set()
        await asyncio.wait_for(cloud.task, timeout=15)
    finally:
        fleet.broker.stop()


def cloud_job(engine: Engine) -> tuple[str, str] | None:
    """The charger's latest firmware/diagnostics job status as the cloud holds it."""
    with engine.connect() as connection:
        row = connection.execute(
            select(charger_jobs.c.job, charger_jobs.c.status).where(
                charger_jobs.c.edge_id == EDGE, charger_jobs.c.charger_id == "CP1"
            )
        ).first()
    return None if row is None else (row[0], row[1])


def fleet_chargers(engine: Engine) -> list[str]:
    return [charger.charger_id for charger in fleet.list_chargers(engine, EDGE)]
