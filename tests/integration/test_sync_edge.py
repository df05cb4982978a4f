"""The edge's side of the sync, through a real mosquitto, against a stand-in for the
aggregator written here with the same wire models: what goes up, in order and once
acknowledged forgotten; presence with a last will; card lists and commands coming down."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from contract import protocol as wire
from edge.cli import main
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningEdge, StartEdge, free_port, stop_edge
from tests.mosquitto import Mosquitto
from tests.waiting import eventually

EDGE = "site-1"


@dataclass
class StandInCloud:
    """Receives event batches and acknowledges each at once; keeps the latest status."""

    client: aiomqtt.Client
    topics: wire.Topics
    events: list[wire.Event] = field(default_factory=list)
    statuses: list[wire.EdgeStatus] = field(default_factory=list)
    acknowledge: bool = True

    async def serve(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            assert isinstance(payload, bytes)
            if message.topic.value == self.topics.events:
                batch = wire.EventBatch.model_validate_json(payload)
                self.events.extend(batch.events)
                if self.acknowledge:
                    ack = wire.Ack(seq=batch.events[-1].seq).model_dump_json()
                    await self.client.publish(self.topics.ack, ack, qos=1)
            elif message.topic.value == self.topics.status:
                self.statuses.append(wire.EdgeStatus.model_validate_json(payload))

    def kinds(self) -> list[str]:
        return [event.data.kind for event in self.events]

    async def send(self, topic: str, message: wire.BaseModel) -> None:
        await self.client.publish(topic, message.model_dump_json(), qos=1)


@pytest.fixture
async def cloud(broker: Mosquitto) -> AsyncIterator[StandInCloud]:
    topics = wire.Topics(EDGE)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="stand-in-cloud") as client:
        await client.subscribe(topics.events, qos=1)
        await client.subscribe(topics.status, qos=1)
        cloud = StandInCloud(client, topics)
        task = asyncio.create_task(cloud.serve())
        yield cloud
        task.cancel()


def sync_settings(broker: Mosquitto, **extra: Any) -> dict[str, Any]:
    return {
        "sync": {
            "edge_id": EDGE,
            "broker_host": "127.0.0.1",
            "broker_port": broker.port,
            "keepalive": 5,
            "ack_timeout": 1.0,
            **extra,
        }
    }


@pytest.fixture
async def charger(
    start_edge: StartEdge, broker: Mosquitto
) -> AsyncIterator[tuple[RunningEdge, SimulatedCharger]]:
    edge = await start_edge(sections=sync_settings(broker))
    async with connect(f"{edge.url}/CP1", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        simulated = SimulatedCharger("CP1", connection, SimulatedChargerConfig(connectors=1))
        listener = asyncio.create_task(simulated.start())
        await simulated.boot()
        await simulated.send_status(1, "Available")
        yield edge, simulated
        listener.cancel()


def outbox_size(edge: RunningEdge) -> int:
    return int(edge.query("SELECT count(*) FROM outbox")[0][0])


async def test_events_go_up_in_order_and_are_forgotten_once_acknowledged(
    cloud: StandInCloud, charger: tuple[RunningEdge, SimulatedCharger]
) -> None:
    edge, simulated = charger
    await edge.execute(
        "INSERT INTO id_tags (id_tag, status, created_at, updated_at) VALUES ('CARD1', 'Accepted', 'x', 'x')"
    )
    await simulated.start_transaction(1, "CARD1")
    await simulated.send_meter_values(1, 3600)
    await simulated.stop_transaction(1)
    expected = [
        "charger.connection",
        "charger.boot",
        "charger.status",
        "charger.status",  # Preparing
        "card.used",
        "transaction.started",
        "charger.status",  # Charging
        "transaction.meter",
        "charger.status",  # Finishing
        "transaction.stopped",
        "charger.status",  # Available
    ]
    await eventually(lambda: cloud.kinds() == expected)
    assert [event.seq for event in cloud.events] == list(range(1, len(expected) + 1))
    stopped = cloud.events[9].data
    assert isinstance(stopped, wire.TransactionStopped) and stopped.energy_wh == 7200
    await eventually(lambda: outbox_size(edge) == 0)
    acked = edge.query("SELECT acked_seq FROM sync_state")[0][0]
    assert acked == len(expected)
    assert cloud.statuses and cloud.statuses[0].state == "online"


async def test_unacknowledged_events_are_sent_again(
    cloud: StandInCloud, charger: tuple[RunningEdge, SimulatedCharger]
) -> None:
    edge, simulated = charger
    await eventually(lambda: len(cloud.events) >= 3)
    cloud.acknowledge = False
    await simulated.send_status(1, "Unavailable")
    await eventually(lambda: cloud.kinds().count("charger.status") >= 3)  # sent, then again
    assert outbox_size(edge) == 1
    cloud.acknowledge = True
    await eventually(lambda: outbox_size(edge) == 0, within=5)


async def test_card_lists_apply_whole_and_report_their_version(
    cloud: StandInCloud, charger: tuple[RunningEdge, SimulatedCharger]
) -> None:
    edge, _ = charger
    await edge.execute(
        "INSERT INTO id_tags (id_tag, status, created_at, updated_at) VALUES ('LOCAL1', 'Accepted', 'x', 'x')"
    )
    full = wire.CardList(
        version=1,
        full=True,
        cards=[
            wire.CardEntry(id_tag="AA01", parent_id_tag="FLAT1"),
            wire.CardEntry(id_tag="AA02", chargers=["CP1"]),
        ],
    )
    await cloud.send(cloud.topics.cards, full)

    def cards() -> dict[str, tuple[str, str]]:
        rows = edge.query("SELECT id_tag, status, source FROM id_tags")
        return {row[0]: (row[1], row[2]) for row in rows}

    await eventually(
        lambda: (
            cards()
            == {
                "LOCAL1": ("Accepted", "local"),
                "AA01": ("Accepted", "cloud"),
                "AA02": ("Accepted", "cloud"),
            }
        )
    )
    await eventually(lambda: "cards.applied" in cloud.kinds())
    delta = wire.CardList(
        version=2,
        full=False,
        base_version=1,
        cards=[wire.CardEntry(id_tag="AA03")],
        removed=["AA01"],
    )
    await cloud.send(cloud.topics.cards, delta)
    await eventually(lambda: cards().get("AA03") == ("Accepted", "cloud"))
    assert cards()["AA01"] == ("Invalid", "cloud")
    # A delta from a version the edge does not hold is refused: it reports version 2.
    await cloud.send(
        cloud.topics.cards, wire.CardList(version=4, full=False, base_version=3, cards=[])
    )
    await eventually(lambda: cloud.kinds().count("cards.applied") == 3)
    reports = [e.data for e in cloud.events if isinstance(e.data, wire.CardsApplied)]
    assert [(report.version, report.cards) for report in reports] == [(1, 2), (2, 2), (2, 2)]
    assert edge.query("SELECT cards_version FROM sync_state")[0][0] == 2
    # A bad payload is refused whole: nothing of it is applied.
    await cloud.client.publish(
        cloud.topics.cards, b'{"version": 9, "full": true, "cards": [{"id_tag": 5}]}', qos=1
    )
    await cloud.send(cloud.topics.cards, wire.CardList(version=3, full=True, cards=[]))
    await eventually(lambda: edge.query("SELECT cards_version FROM sync_state")[0][0] == 3)
    assert cards()["AA03"] == ("Invalid", "cloud") and cards()["LOCAL1"] == ("Accepted", "local")


async def test_operator_commands_run_once_and_report(
    cloud: StandInCloud, charger: tuple[RunningEdge, SimulatedCharger]
) -> None:
    edge, _ = charger
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    unlock = wire.OperatorCommand(
        id="cmd-1", action="unlock", charger_id="CP1", arguments={"connectorId": 1}, expires_at=soon
    )
    await cloud.send(cloud.topics.commands, unlock)
    await cloud.send(cloud.topics.commands, unlock)  # the cloud repeats until it hears back
    stale = wire.OperatorCommand(
        id="cmd-2", action="reset", charger_id="CP1", arguments={"type": "Soft"}, expires_at=past
    )
    await cloud.send(cloud.topics.commands, stale)
    generic = wire.OperatorCommand(
        id="cmd-3",
        action="ocpp",
        charger_id="CP1",
        arguments={"action": "GetConfiguration", "arguments": {"key": ["HeartbeatInterval"]}},
        expires_at=soon,
    )
    await cloud.send(cloud.topics.commands, generic)
    await eventually(lambda: cloud.kinds().count("command.result") == 3)
    results = {
        e.data.command_id: e.data for e in cloud.events if isinstance(e.data, wire.CommandResult)
    }
    assert results["cmd-1"].status == "done" and results["cmd-1"].response == {"status": "Unlocked"}
    assert results["cmd-2"].status == "expired"
    assert results["cmd-3"].status == "done"
    sent = [row[0] for row in edge.query("SELECT action FROM commands ORDER BY id")]
    assert sent == ["UnlockConnector", "GetConfiguration"]


async def test_presence_online_then_last_will_when_the_edge_is_killed(
    broker: Mosquitto, tmp_path: Path
) -> None:
    topics = wire.Topics(EDGE)
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {free_port()}\n[api]\nport = 0\n[files]\nport = 0\n'
        f'[store]\npath = "{tmp_path / "edge.db"}"\n'
        f'[sync]\nedge_id = "{EDGE}"\nbroker_host = "127.0.0.1"\nbroker_port = {broker.port}\n'
        "keepalive = 2\n"
    )
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "run",
        "--config",
        str(config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher") as watcher:
            await watcher.subscribe(topics.status, qos=1)
            async with asyncio.timeout(20):
                online = await next_status(watcher)
            assert online.state == "online" and online.backlog is not None
            assert online.software_version and online.disk_free_mb
            daemon.send_signal(signal.SIGKILL)
            await daemon.wait()
            # The broker notices within 1.5 keepalives and publishes the last will.
            async with asyncio.timeout(10):
                dropped = await next_status(watcher)
            assert dropped.state == "offline"
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()


async def test_a_clean_stop_says_offline(broker: Mosquitto, start_edge: StartEdge) -> None:
    edge = await start_edge(sections=sync_settings(broker))
    link = edge.site.sync
    assert link is not None
    await eventually(lambda: link.connected)
    await stop_edge(edge)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher") as watcher:
        await watcher.subscribe(wire.Topics(EDGE).status, qos=1)
        async with asyncio.timeout(5):
            assert (await next_status(watcher)).state == "offline"  # the retained one


async def next_status(client: aiomqtt.Client) -> wire.EdgeStatus:
    message = await anext(client.messages)
    payload = message.payload
    assert isinstance(payload, bytes)
    return wire.EdgeStatus.model_validate_json(payload)


async def test_sync_status_shows_the_backlog(
    cloud: StandInCloud,
    charger: tuple[RunningEdge, SimulatedCharger],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    edge, simulated = charger
    config = tmp_path / "cli.toml"
    sync = edge.settings.sync
    config.write_text(
        f'[store]\npath = "{edge.db_path}"\n[sync]\nedge_id = "{sync.edge_id}"\n'
        f'broker_host = "{sync.broker_host}"\nbroker_port = {sync.broker_port}\n'
    )
    await eventually(lambda: outbox_size(edge) == 0)
    cloud.acknowledge = False
    await simulated.send_status(1, "Unavailable")
    await eventually(lambda: outbox_size(edge) == 1)
    assert await asyncio.to_thread(main, ["sync", "status", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert f"127.0.0.1:{sync.broker_port} as {EDGE}" in shown
    assert "1 events not yet acknowledged" in shown
    acked = edge.query("SELECT acked_seq FROM sync_state")[0][0]
    assert f"last ack:        seq {acked} at 20" in shown
