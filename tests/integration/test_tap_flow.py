"""A driver's tap at a simulated reader, through the daemon's tap socket, starting and
stopping charging on the project's simulated charger over real websockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from edge.cli import main
from edge.readers.simulated import send_tap
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningEdge, StartEdge
from tests.ocpp_client import RawCharger, now_iso
from tests.waiting import eventually

CARD = "04A2B3C4"
FLATMATE = "04A2B3C5"  # same account (parent FLAT12)
STRANGER = "04FFFFFF"


def reader(reader_id: str, charger: str | None, connector: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": reader_id,
        "kind": "simulated",
        "charger": charger,
        "connector": connector,
        "debounce_seconds": 0,
        **extra,
    }


@pytest.fixture
async def site(start_edge: StartEdge) -> AsyncIterator[tuple[RunningEdge, SimulatedCharger]]:
    edge = await start_edge(
        sections={
            "readers": [
                reader("bay-1", "SIM1", 1),
                reader("bay-2", "SIM1", 2),
                reader("whole", "SIM1"),
                reader("loose", None),
                reader("other", "GONE", 1),
            ]
        }
    )
    for card, parent, status in (
        (CARD, "FLAT12", "Accepted"),
        (FLATMATE, "FLAT12", "Accepted"),
        (STRANGER, None, "Accepted"),
        ("04B10C7E", None, "Blocked"),
    ):
        await edge.execute(
            "INSERT INTO id_tags (id_tag, status, parent_id_tag, created_at, updated_at) "
            "VALUES (?, ?, ?, 'x', 'x')",
            (card, status, parent),
        )
    await edge.execute("INSERT INTO chargers (id, created_at) VALUES ('GONE', 'x')")
    async with connect(f"{edge.url}/SIM1", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        charger = SimulatedCharger("SIM1", connection, SimulatedChargerConfig(connectors=2))
        listener = asyncio.create_task(charger.start())
        await charger.boot()
        for number in (1, 2):
            await charger.send_status(number, "Available")
        yield edge, charger
        listener.cancel()


async def tap(edge: RunningEdge, reader_id: str, uid: str) -> None:
    assert await send_tap(edge.settings.taps.socket_path(edge.db_path), reader_id, uid) == "ok"


def decisions(edge: RunningEdge) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in edge.query(
            "SELECT reader_id, id_tag, action, status, reason, outcome, transaction_id "
            "FROM card_decisions WHERE source = 'reader' ORDER BY id"
        )
    ]


def open_transactions(edge: RunningEdge) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in edge.query(
            "SELECT connector_id, id_tag FROM transactions WHERE stopped_at IS NULL ORDER BY id"
        )
    ]


async def test_tap_starts_and_the_same_card_stops(
    site: tuple[RunningEdge, SimulatedCharger],
) -> None:
    edge, charger = site
    await tap(edge, "bay-1", "04:a2:b3:c4")  # any separators, any case
    transaction_id = await asyncio.wait_for(charger.started_transactions.get(), timeout=5)
    assert open_transactions(edge) == [(1, CARD)]
    await eventually(lambda: decisions(edge)[-1][5] == "started")
    assert decisions(edge) == [
        ("bay-1", CARD, "start", "Accepted", "card accepted", "started", transaction_id)
    ]
    await tap(edge, "bay-1", CARD)
    await eventually(lambda: open_transactions(edge) == [])
    stop = edge.query("SELECT stop_reason FROM transactions WHERE id = ?", (transaction_id,))
    assert stop[0][0] == "Remote"
    assert decisions(edge)[-1][2:4] == ("stop", "Accepted")
    sent = [r[0] for r in edge.query("SELECT action FROM commands ORDER BY id")]
    assert sent == ["RemoteStartTransaction", "RemoteStopTransaction"]


async def test_a_different_card_is_refused_unless_same_account(
    site: tuple[RunningEdge, SimulatedCharger],
) -> None:
    edge, charger = site
    await tap(edge, "bay-1", CARD)
    await asyncio.wait_for(charger.started_transactions.get(), timeout=5)
    await tap(edge, "bay-1", STRANGER)
    await eventually(lambda: len(decisions(edge)) == 2)
    assert decisions(edge)[1][2:5] == (
        "refuse",
        "Accepted",
        "connector busy: another card is charging",
    )
    await tap(edge, "bay-1", FLATMATE)  # the flat's other card stops the flat's charge
    await eventually(lambda: open_transactions(edge) == [])
    assert decisions(edge)[2][2] == "stop"


async def test_refusals_say_why_and_send_nothing(
    site: tuple[RunningEdge, SimulatedCharger],
) -> None:
    edge, charger = site
    await tap(edge, "bay-1", "04B10C7E")
    await tap(edge, "bay-1", "0123456789")  # not in the card table
    await tap(edge, "loose", CARD)
    await tap(edge, "other", CARD)
    await charger.send_status(2, "Faulted", error_code="GroundFailure")
    await tap(edge, "bay-2", CARD)
    await eventually(lambda: len(decisions(edge)) == 5)
    # Taps are handled concurrently: compare without order.
    assert sorted((row[0], row[1], row[4]) for row in decisions(edge)) == [
        ("bay-1", "0123456789", "unknown card"),
        ("bay-1", "04B10C7E", "card blocked"),
        ("bay-2", CARD, "connector faulted"),
        ("loose", CARD, "reader not mapped to a charger"),
        ("other", CARD, "charger offline"),
    ]
    assert edge.query("SELECT count(*) FROM commands")[0][0] == 0
    seen = edge.query("SELECT id_tag, status, last_seen_where FROM authorization_cache")
    assert [tuple(row) for row in seen] == [("0123456789", "Invalid", "reader bay-1")]


async def test_whole_charger_reader_picks_the_plugged_in_connector(
    site: tuple[RunningEdge, SimulatedCharger],
) -> None:
    edge, charger = site
    await charger.send_status(2, "Preparing")
    await tap(edge, "whole", CARD)
    await asyncio.wait_for(charger.started_transactions.get(), timeout=5)
    assert open_transactions(edge) == [(2, CARD)]
    await tap(edge, "whole", STRANGER)  # the other, Available connector
    await asyncio.wait_for(charger.started_transactions.get(), timeout=5)
    assert open_transactions(edge) == [(2, CARD), (1, STRANGER)]
    await tap(edge, "whole", "04A2B3C5")  # flatmate: stops the flat's transaction on 2
    await eventually(lambda: open_transactions(edge) == [(1, STRANGER)])


async def test_two_readers_at_once_on_one_charger(
    site: tuple[RunningEdge, SimulatedCharger],
) -> None:
    edge, charger = site
    # Two drivers at the two bays' readers in the same instant.
    await asyncio.gather(tap(edge, "bay-1", CARD), tap(edge, "bay-2", STRANGER))
    for _ in range(2):
        await asyncio.wait_for(charger.started_transactions.get(), timeout=5)
    assert sorted(open_transactions(edge)) == [(1, CARD), (2, STRANGER)]
    await asyncio.gather(tap(edge, "bay-1", CARD), tap(edge, "bay-2", STRANGER))
    await eventually(lambda: open_transactions(edge) == [])
    # Once the charger says both connectors are free again (Finishing, then Available)...
    statuses = "SELECT status FROM connectors WHERE charger_id = 'SIM1' AND connector_id > 0"
    await eventually(lambda: {row[0] for row in edge.query(statuses)} == {"Available"})
    # ...two taps at once on a reader that serves the whole charger: one connector each.
    await asyncio.gather(tap(edge, "whole", CARD), tap(edge, "whole", STRANGER))
    for _ in range(2):
        await asyncio.wait_for(charger.started_transactions.get(), timeout=5)
    assert sorted(connector for connector, _ in open_transactions(edge)) == [1, 2]


async def test_tap_while_starting_and_charger_rejecting(
    site: tuple[RunningEdge, SimulatedCharger],
) -> None:
    edge, charger = site
    # The charger accepts the start but takes its time to send StartTransaction.
    gate = asyncio.Event()
    original = charger.start_transaction

    async def slow_start(connector_id: int, id_tag: str) -> tuple[int, str]:
        await gate.wait()
        return await original(connector_id, id_tag)

    charger.start_transaction = slow_start  # type: ignore[method-assign]
    await tap(edge, "bay-1", CARD)
    await eventually(lambda: decisions(edge) and decisions(edge)[0][5] == "start accepted")
    await tap(edge, "bay-1", CARD)  # the driver taps again before the charger started
    await eventually(lambda: len(decisions(edge)) == 2)
    assert decisions(edge)[1][2:5] == ("ignore", "Accepted", "already starting")
    gate.set()
    await asyncio.wait_for(charger.started_transactions.get(), timeout=5)
    await eventually(lambda: decisions(edge)[0][5] == "started")

    # A charger that refuses the remote start: connector 2 made unavailable on its side.
    charger.connectors[2].transaction_id = 999
    await tap(edge, "bay-2", STRANGER)
    await eventually(lambda: decisions(edge)[-1][5] == "charger refused")


async def test_cards_cli_limits_and_decisions(
    site: tuple[RunningEdge, SimulatedCharger],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    edge, _ = site
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[store]\npath = "{edge.db_path}"\n[taps]\nsocket = "{tmp_path / "taps.sock"}"\n'
    )

    def cli(*arguments: str) -> int:
        return main([*arguments, "--config", str(config)])

    # The number printed on a 125 kHz card, limited to another charger.
    assert (
        await asyncio.to_thread(cli, "cards", "add", "0011189196", "--decimal", "--charger", "CP9")
        == 0
    )
    assert "00AABBCC: Accepted at CP9" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, "tap", "bay-1", "00aabbcc") == 0
    await asyncio.to_thread(cli, "tap", "bay-1", "04DDDDDD")
    await eventually(lambda: len(decisions(edge)) == 2)
    capsys.readouterr()
    assert await asyncio.to_thread(cli, "taps") == 0
    shown = capsys.readouterr().out
    assert "card not allowed at charger SIM1" in shown and "unknown card" in shown
    assert await asyncio.to_thread(cli, "cards", "seen") == 0
    assert "04DDDDDD" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, "tap", "nobody", CARD) == 1
    assert "no simulated reader 'nobody'" in capsys.readouterr().err
    assert edge.query("SELECT count(*) FROM commands")[0][0] == 0


async def test_readers_and_decisions_in_the_local_api(start_edge: StartEdge) -> None:
    edge = await start_edge(with_api=True, sections={"readers": [reader("desk", None)]})
    await tap(edge, "desk", CARD)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.api_port}") as client:
        await eventually(lambda: len(decisions(edge)) == 1)
        readers = (await client.get("/api/readers")).json()
        assert [(r["id"], r["online"], r["charger"]) for r in readers] == [("desk", True, None)]
        made = (await client.get("/api/card-decisions", params={"limit": 5})).json()
        assert [(d["id_tag"], d["reason"]) for d in made] == [
            (CARD, "reader not mapped to a charger")
        ]


async def test_a_start_reported_before_the_remote_start_answer_ends_started(
    start_edge: StartEdge,
) -> None:
    # A charger may send StartTransaction before it answers RemoteStartTransaction;
    # this one waits for the StartTransaction's answer first, so the tap's "started"
    # is always recorded before the charger's "Accepted" reaches the tap flow.
    edge = await start_edge(sections={"readers": [reader("bay-1", "RAW1", 1)]})
    await edge.execute(
        "INSERT INTO id_tags (id_tag, status, created_at, updated_at) "
        "VALUES (?, 'Accepted', 'x', 'x')",
        (CARD,),
    )
    async with RawCharger(edge.url, "RAW1") as charger:
        await charger.boot()
        await charger.ok(
            "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        )
        await tap(edge, "bay-1", CARD)
        assert charger.connection is not None
        remote_start = json.loads(await asyncio.wait_for(charger.connection.recv(), 10))
        assert remote_start[2] == "RemoteStartTransaction", remote_start
        started = await charger.ok(
            "StartTransaction",
            {"connectorId": 1, "idTag": CARD, "meterStart": 0, "timestamp": now_iso()},
        )
        transaction_id = started["transactionId"]
        await eventually(lambda: decisions(edge)[0][5] == "started")
        await charger.connection.send(json.dumps([3, remote_start[1], {"status": "Accepted"}]))
        # The answer is linked to the tap; its outcome stays where the charger took it.
        linked = "SELECT command_id FROM card_decisions WHERE source = 'reader'"
        await eventually(lambda: edge.query(linked)[0][0] is not None)
        assert decisions(edge) == [
            ("bay-1", CARD, "start", "Accepted", "card accepted", "started", transaction_id)
        ]
