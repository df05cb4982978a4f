"""No event, payload or edge stops cloud sync or the aggregator: the edge daemon with a
simulated charger, a real mosquitto and the aggregator (SQLite, and PostgreSQL where the
store's types matter), driven with what a charger, an edge or anyone on the broker can
send that is legal but hostile."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, DataTransferStatus
from sqlalchemy import Engine, select
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from cloud import cli as cloud_cli
from cloud.store import fleet
from cloud.store.schema import edges, events
from contract import protocol as wire
from edge import cli as edge_cli
from edge.ocpp.library import on
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import (
    STORES,
    PostgresServer,
    RunningCloud,
    RunningEdge,
    StartCloud,
    StartEdge,
    cloud_on_store,
    stop_edge,
)
from tests.mosquitto import Mosquitto
from tests.waiting import eventually, eventually_answers

EDGE = "site-7"


@pytest.fixture(params=STORES)
async def cloud(
    request: pytest.FixtureRequest, broker: Mosquitto, start_cloud: StartCloud
) -> RunningCloud:
    return await cloud_on_store(request, broker, start_cloud)


@pytest.fixture
async def sqlite_cloud(broker: Mosquitto, start_cloud: StartCloud) -> RunningCloud:
    return await start_cloud(broker)


def sync_section(broker: Mosquitto, **extra: Any) -> dict[str, Any]:
    return {
        "sync": {
            "edge_id": EDGE,
            "broker_host": "127.0.0.1",
            "broker_port": broker.port,
            "keepalive": 5,
            "ack_timeout": 2.0,
            **extra,
        }
    }


class TalkativeCharger(SimulatedCharger):
    """Answers a DataTransfer with as much data as one WebSocket message to the edge
    holds (1 MiB, less the frame around it): legal, and more than the event reporting it
    can carry to the cloud in one batch."""

    @on(Action.data_transfer)
    async def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: str | None = None
    ) -> call_result.DataTransfer:
        return call_result.DataTransfer(
            status=DataTransferStatus.accepted, data="x" * (1_048_576 - 120)
        )


@contextlib.asynccontextmanager
async def charger_at(
    edge: RunningEdge,
    config: SimulatedChargerConfig | None = None,
    name: str = "CP1",
    charger_class: type[SimulatedCharger] = SimulatedCharger,
) -> AsyncIterator[SimulatedCharger]:
    async with connect(
        f"{edge.url}/{name}", subprotocols=[Subprotocol("ocpp1.6")], max_size=None
    ) as connection:
        simulated = charger_class(name, connection, config or SimulatedChargerConfig(connectors=1))
        listener = asyncio.create_task(simulated.start())
        try:
            yield simulated
        finally:
            listener.cancel()


async def send_status(
    charger: SimulatedCharger, connector_id: int, status: str, info: str | None = None
) -> None:
    """A StatusNotification with any connector id and info text the schema allows."""
    await charger.call(
        call.StatusNotification(
            connector_id=connector_id,
            error_code="NoError",
            status=status,
            info=info,
            timestamp=datetime.now(UTC).isoformat(),
        ),
        suppress=False,
    )


def store_epoch(edge: RunningEdge) -> str | None:
    """The store's epoch (None from a release before epochs)."""
    columns = {column["name"] for column in edge.query("PRAGMA table_info(sync_state)")}
    if "epoch" not in columns:
        return None
    return str(edge.query("SELECT epoch FROM sync_state")[0][0])


def outbox_size(edge: RunningEdge) -> int:
    return int(edge.query("SELECT count(*) FROM outbox")[0][0])


def all_said_and_acked(edge: RunningEdge) -> bool:
    """No charger connected (its disconnection is an event too) and the outbox empty."""
    connected = edge.query("SELECT count(*) FROM chargers WHERE connected = 1")[0][0]
    return connected == 0 and outbox_size(edge) == 0


def cloud_seqs(engine: Engine, edge_id: str = EDGE) -> list[int]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(events.c.seq).where(events.c.edge_id == edge_id).order_by(events.c.seq)
            ).scalars()
        )


def cloud_statuses(engine: Engine, edge_id: str = EDGE) -> list[tuple[int, str]]:
    """(connector, status) of every charger.status event the cloud stored, in order."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(events.c.data)
            .where(events.c.edge_id == edge_id, events.c.kind == "charger.status")
            .order_by(events.c.seq)
        ).scalars()
        return [(row["connector_id"], row["status"]) for row in rows]


def edge_view(engine: Engine, edge_id: str = EDGE) -> fleet.EdgeView | None:
    found = [e for e in fleet.list_edges(engine, datetime.now(UTC)) if e.edge_id == edge_id]
    return found[0] if found else None


def cloud_config(cloud: RunningCloud, path: Path) -> Path:
    path.write_text(
        f'[store]\nurl = "{cloud.settings.store.url}"\n'
        f'[firmware]\nsigning_key = "{cloud.settings.firmware.signing_key}"\n'
    )
    return path


def edge_config(edge: RunningEdge, path: Path) -> Path:
    sync = edge.settings.sync
    path.write_text(
        f'[store]\npath = "{edge.db_path}"\n[sync]\nedge_id = "{sync.edge_id}"\n'
        f'broker_host = "{sync.broker_host}"\nbroker_port = {sync.broker_port}\n'
    )
    return path


# -- item: one event stops sync for good --------------------------------------------


async def test_a_nul_in_a_chargers_text_reaches_the_cloud_cleaned_and_sync_goes_on(
    cloud: RunningCloud, broker: Mosquitto, start_edge: StartEdge
) -> None:
    edge = await start_edge(sections=sync_section(broker))
    config = SimulatedChargerConfig(connectors=1, vendor="Ac\u0000me")
    async with charger_at(edge, config) as charger:
        await charger.boot()
        await send_status(charger, 1, "Faulted", info="relay\u0000stuck")
        # What follows must not wait behind the events holding a NUL.
        await charger.send_status(1, "Available")
        await eventually(lambda: outbox_size(edge) == 0, within=20)
    await eventually(lambda: cloud_statuses(cloud.engine) == [(1, "Faulted"), (1, "Available")])
    (stored,) = fleet.list_chargers(cloud.engine, EDGE)
    assert stored.vendor == "Ac\ufffdme"
    with cloud.engine.connect() as connection:
        boot = connection.execute(
            select(events.c.data).where(events.c.kind == "charger.boot")
        ).scalar_one()
    assert boot["cleaned"] == ["vendor: NUL or lone surrogate replaced by U+FFFD"]
    assert fleet.list_quarantined(cloud.engine, EDGE) == []


async def test_a_megabyte_answer_to_a_cloud_command_is_cut_and_sync_goes_on(
    sqlite_cloud: RunningCloud, broker: Mosquitto, start_edge: StartEdge
) -> None:
    cloud = sqlite_cloud
    # A site that raised [ocpp.limits] max_frame_bytes for a charger this talkative.
    edge = await start_edge(
        sections=sync_section(broker), limits={"max_frame_bytes": 2 * 1024 * 1024}
    )
    async with charger_at(edge, charger_class=TalkativeCharger) as charger:
        await charger.boot()
        await eventually(lambda: (view := edge_view(cloud.engine)) is not None and view.online)
        async with httpx.AsyncClient(
            base_url=cloud.api_url, headers=cloud.api_headers, timeout=10
        ) as api:
            command = {
                "charger_id": "CP1",
                "action": "ocpp",
                "arguments": {
                    "action": "DataTransfer",
                    "arguments": {"vendorId": "ocpp-edge", "messageId": "dump"},
                },
            }
            answer = await api.post(f"/api/edges/{EDGE}/commands", json=command)
            assert answer.status_code == 200, answer.text
            command_id = answer.json()["id"]

            async def finished() -> bool:
                rows = (await api.get(f"/api/edges/{EDGE}/commands")).json()
                return any(row["id"] == command_id and row["status"] == "done" for row in rows)

            await eventually_answers(finished, within=30)
        await charger.send_status(1, "Unavailable")
        await eventually(lambda: (1, "Unavailable") in cloud_statuses(cloud.engine), within=20)
    with cloud.engine.connect() as connection:
        result = connection.execute(
            select(events.c.data).where(events.c.kind == "command.result")
        ).scalar_one()
    # Cut, and says so: the edge's message log keeps the charger's answer whole.
    assert result["response"]["data"].endswith("…[cut]")
    assert len(result["response"]["data"]) == 1000
    assert result["cleaned"] == ["response.data: 1048456 characters cut to 1000"]


async def test_a_connector_id_beyond_32_bits_reaches_a_postgresql_cloud(
    broker: Mosquitto, start_edge: StartEdge, start_cloud: StartCloud, postgres: PostgresServer
) -> None:
    url = postgres.create_database().render_as_string(hide_password=False)
    cloud = await start_cloud(broker, store_url=url)
    edge = await start_edge(sections=sync_section(broker))
    async with charger_at(edge) as charger:
        await charger.boot()
        await send_status(charger, 3_000_000_000, "Available")
        await charger.send_status(1, "Available")
        await eventually(lambda: outbox_size(edge) == 0, within=20)
    await eventually(
        lambda: cloud_statuses(cloud.engine) == [(3_000_000_000, "Available"), (1, "Available")]
    )


async def test_an_event_the_cloud_cannot_store_is_quarantined_and_shown_everywhere(
    cloud: RunningCloud,
    broker: Mosquitto,
    start_edge: StartEdge,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    edge = await start_edge(sections=sync_section(broker))
    async with charger_at(edge) as charger:
        await charger.boot()
        await eventually(lambda: outbox_size(edge) == 0, within=20)
        # An event no release of the cloud can take, already in the outbox (written by
        # a release with another event kind): it must not hold back what follows.
        await edge.execute(
            "INSERT INTO outbox (at, kind, data) VALUES (?, ?, ?)",
            ("2026-03-01T10:00:00.000Z", "charger.exploded", '{"kind":"charger.exploded"}'),
        )
        (bad_seq,) = edge.query("SELECT max(seq) FROM outbox")[0]
        await charger.send_status(1, "Unavailable")
        await eventually(lambda: (1, "Unavailable") in cloud_statuses(cloud.engine), within=20)
    await eventually(lambda: outbox_size(edge) == 0)
    seqs = cloud_seqs(cloud.engine)
    assert bad_seq not in seqs and seqs == [s for s in range(1, seqs[-1] + 1) if s != bad_seq]

    async with httpx.AsyncClient(
        base_url=cloud.api_url, headers=cloud.api_headers, timeout=10
    ) as api:
        (kept,) = (await api.get(f"/api/edges/{EDGE}/quarantine")).json()
        assert (kept["edge_seq"], kept["kind"], kept["reason"]) == (
            bad_seq,
            "charger.exploded",
            "invalid",
        )
        assert json.loads(kept["raw"])["data"] == {"kind": "charger.exploded"}
        assert (await api.get(f"/api/edges/{EDGE}")).json()["quarantined_events"] == 1
        assert (await api.get("/api/edges/nowhere/quarantine")).status_code == 404

    settings = cloud_config(cloud, tmp_path / "cloud.toml")
    assert await asyncio.to_thread(cloud_cli.main, ["quarantine", "--config", str(settings)]) == 0
    shown = capsys.readouterr().out
    assert EDGE in shown and "charger.exploded" in shown and "invalid" in shown
    assert await asyncio.to_thread(cloud_cli.main, ["edges", "--config", str(settings)]) == 0
    assert "QUARANTINED" in capsys.readouterr().out

    # The edge learned it from the ack, and says so.
    config = edge_config(edge, tmp_path / "edge.toml")
    assert await asyncio.to_thread(edge_cli.main, ["sync", "status", "--config", str(config)]) == 0
    status = capsys.readouterr().out
    assert f"quarantined:     1 events (latest: seq {bad_seq} (charger.exploded): invalid" in status


# -- item: an ack beyond what was sent ------------------------------------------------


async def test_an_ack_beyond_what_was_sent_is_refused_and_nothing_is_lost(
    broker: Mosquitto, start_edge: StartEdge, start_cloud: StartCloud
) -> None:
    topics = wire.Topics(EDGE)
    edge = await start_edge(sections=sync_section(broker, ack_timeout=30.0))
    link = edge.site.sync
    assert link is not None
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher") as watcher:
        await watcher.subscribe(topics.events, qos=1)
        async with charger_at(edge) as charger:
            await charger.boot()
            await charger.send_status(1, "Available")
            async with asyncio.timeout(20):
                sent = wire.EventBatch.model_validate_json(
                    bytes((await anext(watcher.messages)).payload)  # type: ignore[arg-type]
                )
            held = outbox_size(edge)
            assert held >= 3 and sent.events[-1].seq <= held
            # Anyone on the broker: "stored up to 100", which the edge never sent.
            forged = wire.Ack(seq=held + 100).model_dump_json(exclude_none=True)
            await watcher.publish(topics.ack, forged, qos=1)
            await eventually(
                lambda: getattr(link, "refused_acks", 0) == 1 or outbox_size(edge) < held
            )
            assert outbox_size(edge) == held
            assert edge.query("SELECT refused_acks FROM sync_state")[0][0] == 1
            await charger.send_status(1, "Unavailable")  # after the forgery: seq held + 1
            # The real aggregator then gets every event, once, in order.
            cloud = await start_cloud(broker)
            await eventually(lambda: outbox_size(edge) == 0, within=30)
    assert cloud_seqs(cloud.engine) == list(range(1, held + 2))
    assert cloud_statuses(cloud.engine)[-1] == (1, "Unavailable")


# -- item: a replaced store ----------------------------------------------------------


async def test_a_replaced_edge_store_starts_a_new_epoch_and_nothing_is_lost(
    cloud: RunningCloud,
    broker: Mosquitto,
    start_edge: StartEdge,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    edge = await start_edge(sections=sync_section(broker))
    async with charger_at(edge) as charger:
        await charger.boot()
        await charger.send_status(1, "Available")
    await eventually(lambda: all_said_and_acked(edge), within=20)
    first = cloud_seqs(cloud.engine)
    first_epoch = store_epoch(edge)
    await stop_edge(edge)
    # The SD card died: a new store, whose outbox starts again at seq 1.
    for suffix in ("", "-wal", "-shm"):
        await asyncio.to_thread(Path(f"{edge.db_path}{suffix}").unlink, missing_ok=True)
    edge = await start_edge(sections=sync_section(broker))
    async with charger_at(edge) as charger:
        await charger.boot()
        await charger.send_status(1, "Preparing")
        await charger.send_status(1, "Unavailable")
    await eventually(lambda: all_said_and_acked(edge), within=20)
    # Every event of both stores, once, the new store's after the old one's.
    new_count = int(edge.query("SELECT acked_seq FROM sync_state")[0][0])
    assert cloud_seqs(cloud.engine) == list(range(1, len(first) + new_count + 1))
    assert [status for _, status in cloud_statuses(cloud.engine)] == [
        "Available",
        "Preparing",
        "Unavailable",
    ]
    second_epoch = store_epoch(edge)
    assert second_epoch is not None and second_epoch != first_epoch
    view = edge_view(cloud.engine)
    assert view is not None and view.epoch == second_epoch and view.epochs == 2
    settings = cloud_config(cloud, tmp_path / "cloud.toml")
    assert await asyncio.to_thread(cloud_cli.main, ["edges", "--config", str(settings)]) == 0
    assert f"{second_epoch[:8]} (2 stores since" in capsys.readouterr().out

    # A batch of the old store after the switch (a late redelivery) is refused.
    assert first_epoch is not None
    old = wire.EventBatch(
        edge_id=EDGE,
        epoch=first_epoch,
        events=[
            wire.Event(
                seq=len(first) + 1,
                at="2026-03-01T10:00:00Z",
                data=wire.ChargerConnection(charger_id="GHOST", connected=True),
            )
        ],
    )
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="late") as late:
        await late.publish(wire.Topics(EDGE).events, old.model_dump_json(), qos=1)

    def old_epoch_refusals() -> int:
        counts = fleet.rejection_counts(cloud.engine)
        return sum(r.count for r in counts if (r.source, r.reason) == (EDGE, "old_epoch"))

    await eventually(lambda: old_epoch_refusals() == 1)
    assert "GHOST" not in {c.charger_id for c in fleet.list_chargers(cloud.engine, EDGE)}


# -- item: the inbound queue ---------------------------------------------------------


async def test_one_edge_flooding_the_aggregator_does_not_delay_another_edges_batch(
    broker: Mosquitto, start_cloud: StartCloud
) -> None:
    cloud = await start_cloud(broker)
    aggregator = cloud.site.aggregator
    flood = wire.Topics("flood")
    per_batch, batches = 200, 600

    def flood_batch(number: int) -> bytes:
        first = number * per_batch + 1
        return (
            wire.EventBatch(
                edge_id="flood",
                events=[
                    wire.Event(
                        seq=seq,
                        at="2026-03-01T10:00:00Z",
                        data=wire.CardUsed(
                            id_tag=f"T{seq}",
                            source="reader",
                            action="start",
                            status="Accepted",
                            reason="flood",
                        ),
                    )
                    for seq in range(first, first + per_batch)
                ],
            )
            .model_dump_json()
            .encode()
        )

    payloads = [flood_batch(number) for number in range(batches)]
    calm = wire.Topics("calm")
    calm_batch = wire.EventBatch(
        edge_id="calm",
        events=[
            wire.Event(
                seq=1,
                at="2026-03-01T10:00:00Z",
                data=wire.ChargerConnection(charger_id="CP1", connected=True),
            )
        ],
    ).model_dump_json()
    async with (
        aiomqtt.Client("127.0.0.1", broker.port, identifier="flood") as flooder,
        aiomqtt.Client("127.0.0.1", broker.port, identifier="calm") as calm_edge,
    ):
        await calm_edge.subscribe(calm.ack, qos=1)
        for payload in payloads:
            await flooder.publish(flood.events, payload, qos=1)
        await calm_edge.publish(calm.events, calm_batch, qos=1)
        # Served in turn: at most a few of the flood's batches go before it.
        async with asyncio.timeout(5):
            ack = wire.Ack.model_validate_json(bytes(next_payload(await anext(calm_edge.messages))))
        assert ack.seq == 1
    assert cloud_seqs(cloud.engine, "flood")[-1] < batches * per_batch  # still flooding
    assert aggregator.inbound.dropped["edge_share"] > 0
    assert aggregator.inbound.dropped_by_edge["flood"] == sum(aggregator.inbound.dropped.values())
    assert aggregator.sessions == 1 and aggregator.connected
    async with httpx.AsyncClient(
        base_url=cloud.api_url, headers=cloud.api_headers, timeout=10
    ) as api:
        stats = (await api.get("/api/stats/inbound")).json()
    assert stats["dropped"]["edge_share"] > 0 and "flood" in stats["dropped_by_edge"]


def next_payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    assert isinstance(payload, bytes)
    return payload


# -- item: edge ids in routes and topics -------------------------------------------


async def test_a_route_with_no_edge_id_in_it_is_refused_and_mqtt_keeps_running(
    broker: Mosquitto, start_cloud: StartCloud
) -> None:
    cloud = await start_cloud(broker)
    aggregator = cloud.site.aggregator
    await eventually(lambda: aggregator.connected)
    drops: list[bool] = []

    async def watch() -> None:
        while True:
            drops.append(not aggregator.connected)
            await asyncio.sleep(0.01)

    watching = asyncio.create_task(watch())
    async with httpx.AsyncClient(
        base_url=cloud.api_url, headers=cloud.api_headers, timeout=10
    ) as api:
        for method, path, body in (
            ("PUT", "/api/edges/%2B/cards", [{"id_tag": "AA01"}]),
            ("PUT", "/api/edges/%23/cards", [{"id_tag": "AA01"}]),
            ("PUT", "/api/edges/site%2F7/cards", [{"id_tag": "AA01"}]),
            ("POST", "/api/edges/%2B/commands", {"charger_id": "CP1", "action": "reset"}),
            ("GET", "/api/edges/%2B/commands", None),
            ("POST", "/api/edges/%2B/enrollment-codes", {}),
            ("GET", "/api/edges/%20site/quarantine", None),
        ):
            answer = await api.request(method, path, json=body)
            assert answer.status_code == 422, (path, answer.text)
            assert "is not an edge id: 1 to 64 letters" in answer.json()["detail"], path
        # The desired-state loop runs at once after a change: give it its turn.
        await asyncio.sleep(1.5)
    watching.cancel()
    assert not any(drops) and aggregator.sessions == 1
    with cloud.engine.connect() as connection:
        assert list(connection.execute(select(edges.c.id)).scalars()) == []


# -- item: commands interrupted by a stop --------------------------------------------


async def silent_charger(
    edge: RunningEdge, name: str
) -> tuple[ClientConnection, asyncio.Task[None]]:
    """A charger that boots, then never answers the edge's calls."""
    connection = await connect(f"{edge.url}/{name}", subprotocols=[Subprotocol("ocpp1.6")])
    boot = {"chargePointVendor": "Silent", "chargePointModel": "S1"}
    await connection.send(json.dumps([2, "boot-1", "BootNotification", boot]))
    await connection.recv()

    async def ignore() -> None:
        with contextlib.suppress(Exception):
            async for _ in connection:
                pass

    return connection, asyncio.create_task(ignore())


async def test_commands_interrupted_by_a_stop_are_reported_or_run_again(
    sqlite_cloud: RunningCloud, broker: Mosquitto, start_edge: StartEdge
) -> None:
    cloud = sqlite_cloud
    edge = await start_edge(sections=sync_section(broker))
    connection, ignoring = await silent_charger(edge, "CP1")
    await eventually(lambda: (view := edge_view(cloud.engine)) is not None and view.online)
    async with httpx.AsyncClient(
        base_url=cloud.api_url, headers=cloud.api_headers, timeout=10
    ) as api:
        ids = {}
        for action, arguments in (
            ("reset", {"type": "Soft"}),
            ("trigger", {"requestedMessage": "StatusNotification", "connectorId": 1}),
        ):
            answer = await api.post(
                f"/api/edges/{EDGE}/commands",
                json={"charger_id": "CP1", "action": action, "arguments": arguments},
            )
            ids[action] = answer.json()["id"]

        def received() -> int:
            return len(edge.query("SELECT id FROM cloud_commands WHERE status = 'received'"))

        await eventually(lambda: received() == 2, within=15)
        # The daemon stops while both wait for the silent charger's answers.
        await stop_edge(edge)
        ignoring.cancel()
        await connection.close()
        edge = await start_edge(sections=sync_section(broker))
        async with charger_at(edge) as charger:
            await charger.boot()

            seen: list[Any] = []

            async def statuses() -> dict[str, str]:
                rows = (await api.get(f"/api/edges/{EDGE}/commands")).json()
                seen[:] = rows
                return {row["id"]: row["status"] for row in rows}

            # A reset may have been done or not: reported. A trigger is run again.
            try:
                await eventually_answers(
                    lambda: has(statuses(), {ids["reset"]: "interrupted", ids["trigger"]: "done"}),
                    within=30,
                )
            except TimeoutError:
                raise AssertionError(f"commands as the cloud saw them last: {seen}") from None
            rows = (await api.get(f"/api/edges/{EDGE}/commands")).json()
            reset = next(row for row in rows if row["id"] == ids["reset"])
            assert "whether the charger acted is unknown" in reset["detail"]
    assert edge.query("SELECT count(*) FROM cloud_commands WHERE status = 'received'")[0][0] == 0


async def has(answer: Any, expected: dict[str, str]) -> bool:
    return bool(await answer == expected)


# -- beyond the list: card lists and desired state ----------------------------------


async def test_a_card_list_larger_than_the_brokers_packet_limit_arrives_in_parts(
    tmp_path: Path, start_cloud: StartCloud, start_edge: StartEdge
) -> None:
    # The shipped broker config's limit: a larger packet ends the sender's connection.
    broker = Mosquitto(tmp_path / "limited", "max_packet_size 4194304")
    broker.start()
    try:
        cloud = await start_cloud(broker)
        edge = await start_edge(sections=sync_section(broker))
        await eventually(lambda: (view := edge_view(cloud.engine)) is not None and view.online)
        cards = [
            {"id_tag": f"C{number:07d}", "label": f"{number:07d} " + "l" * 190}
            for number in range(20_000)
        ]
        async with httpx.AsyncClient(
            base_url=cloud.api_url, headers=cloud.api_headers, timeout=30
        ) as api:
            answer = await api.put(f"/api/edges/{EDGE}/cards", json=cards)
            assert answer.status_code == 200, answer.text
            version = answer.json()["version"]

            async def applied() -> bool:
                body = (await api.get(f"/api/edges/{EDGE}/cards")).json()
                return bool(body["applied_version"] == version)

            await eventually_answers(applied, within=60)
        held = edge.query("SELECT count(*) FROM id_tags WHERE source = 'cloud'")[0][0]
        assert held == 20_000
        assert cloud.site.aggregator.sessions == 1
        assert edge.query("SELECT count(*) FROM card_list_parts")[0][0] == 0
    finally:
        broker.stop()


async def test_desired_state_the_edge_cannot_take_is_refused_whole_and_reported(
    sqlite_cloud: RunningCloud, broker: Mosquitto, start_edge: StartEdge
) -> None:
    cloud = sqlite_cloud
    edge = await start_edge(sections=sync_section(broker))
    topics = wire.Topics(EDGE)
    await eventually(lambda: (view := edge_view(cloud.engine)) is not None and view.online)
    async with httpx.AsyncClient(
        base_url=cloud.api_url, headers=cloud.api_headers, timeout=10
    ) as api:
        # The cloud itself refuses a card no charger's local list could hold.
        answer = await api.put(
            f"/api/edges/{EDGE}/cards", json=[{"id_tag": "AA01", "expiry_date": "tomorrow"}]
        )
        assert answer.status_code == 422
        # One sent by anything else on the broker (an older cloud, a broken tool).
        bad_cards = {
            "version": 5,
            "full": True,
            "cards": [{"id_tag": "GOOD1"}, {"id_tag": "BAD1", "expiry_date": "tomorrow"}],
        }
        bad_command = {
            "id": "cmd-broken",
            "action": "reset",
            "charger_id": "CP1",
            "arguments": {},
            "expires_at": "soon",
        }
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="other") as other:
            await other.publish(topics.cards, json.dumps(bad_cards), qos=1)
            await other.publish(topics.commands, json.dumps(bad_command), qos=1)

        async def refused() -> bool:
            body = (await api.get(f"/api/edges/{EDGE}")).json()
            return "expiry_date" in (body.get("cards_refused") or "")

        await eventually_answers(refused, within=15)
    # Nothing of the list was applied.
    assert edge.query("SELECT count(*) FROM id_tags")[0][0] == 0
    assert edge.query("SELECT cards_version FROM sync_state")[0][0] == 0

    def rejected_command() -> dict[str, Any] | None:
        with cloud.engine.connect() as connection:
            for data in connection.execute(
                select(events.c.data).where(events.c.kind == "command.result")
            ).scalars():
                if data["command_id"] == "cmd-broken":
                    return dict(data)
        return None

    await eventually(lambda: rejected_command() is not None, within=15)
    result = rejected_command()
    assert result is not None and result["status"] == "rejected"
    assert "expires_at" in result["detail"]
    assert edge.query("SELECT count(*) FROM commands")[0][0] == 0  # never run
