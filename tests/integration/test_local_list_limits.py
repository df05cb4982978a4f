"""Local lists that fit each charger: the edge reads a charger's local-list keys after its
boot and keeps to them (parts of at most SendLocalListMaxLength, at most
LocalAuthListMaxLength entries, the cards it holds chosen), leaves alone a charger without
the feature, and does not try a refused list again in a loop. Simulated chargers enforce
their keys as real ones do: a longer SendLocalList, or a list beyond what they hold, is
answered Failed."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

import edge.site_tasks
from edge.cli import main
from edge.clock import parse_timestamp
from edge.ocpp.library import set_handler
from edge.ocpp.local_list import sync_local_list
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import RunningEdge, StartEdge
from tests.waiting import eventually

OCPP16 = [Subprotocol("ocpp1.6")]


@contextlib.asynccontextmanager
async def charger_at(
    edge: RunningEdge, charger_id: str, config: SimulatedChargerConfig, *, boot: bool = True
) -> AsyncIterator[SimulatedCharger]:
    """A simulated charger connected to the edge (booted unless told otherwise)."""
    async with connect(f"{edge.url}/{charger_id}", subprotocols=OCPP16) as connection:
        charger = SimulatedCharger(charger_id, connection, config)
        listener = asyncio.create_task(charger.start())
        try:
            if boot:
                assert (await charger.boot()).status == "Accepted"
            yield charger
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)


async def add_cards(edge: RunningEdge, id_tags: Iterable[str], status: str = "Accepted") -> None:
    """Cards written as the CLI writes them: another connection, one transaction."""
    rows = [(id_tag, status) for id_tag in id_tags]

    def write() -> None:
        connection = sqlite3.connect(edge.db_path, timeout=10)
        try:
            with connection:
                connection.executemany(
                    "INSERT INTO id_tags (id_tag, status, created_at, updated_at) "
                    "VALUES (?, ?, 'x', 'x')",
                    rows,
                )
        finally:
            connection.close()

    await asyncio.to_thread(write)


def card_version(edge: RunningEdge) -> int:
    return int(edge.query("SELECT version FROM local_list_counter")[0][0])


def list_row(edge: RunningEdge, charger_id: str) -> dict[str, Any] | None:
    rows = edge.query("SELECT * FROM local_lists WHERE charger_id = ?", (charger_id,))
    return dict(rows[0]) if rows else None


def listed_at_card_version(edge: RunningEdge, charger_id: str) -> bool:
    row = list_row(edge, charger_id)
    return row is not None and row["status"] == "listed" and row["version"] == card_version(edge)


def actions_sent(edge: RunningEdge, charger_id: str) -> list[str]:
    rows = edge.query("SELECT action FROM commands WHERE charger_id = ? ORDER BY id", (charger_id,))
    return [row[0] for row in rows]


def cli_chargers(capsys: pytest.CaptureFixture[str], edge: RunningEdge, tmp_path: Path) -> str:
    config = tmp_path / "cli.toml"
    config.write_text(f'[store]\npath = "{edge.db_path}"\n')
    assert main(["chargers", "--config", str(config)]) == 0
    return capsys.readouterr().out


async def local_list_state(edge: RunningEdge, charger_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.api_port}") as client:
        answer = await client.get(f"/api/chargers/{charger_id}/state")
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()["local_list"]
        return state


async def test_list_goes_in_parts_of_at_most_send_local_list_max_length(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(push_local_list=True)
    cards = [f"CARD{number:03d}" for number in range(35)]
    await add_cards(edge, cards)
    config = SimulatedChargerConfig(send_local_list_max_length=10, local_list_max_length=1000)
    async with charger_at(edge, "PARTS", config) as charger:
        await eventually(lambda: listed_at_card_version(edge, "PARTS"), within=15)
        assert sorted(charger.local_list) == cards
        version = card_version(edge)
        # A Full first, then Differentials, each its own listVersion, the last the table's.
        assert charger.local_list_updates == [
            ("Full", version - 3, 10, "Accepted"),
            ("Differential", version - 2, 10, "Accepted"),
            ("Differential", version - 1, 10, "Accepted"),
            ("Differential", version, 5, "Accepted"),
        ]
        assert charger.local_list_version == version
    row = list_row(edge, "PARTS")
    assert row is not None and (row["held"], row["cards"], row["list_version"]) == (35, 35, version)
    assert (
        actions_sent(edge, "PARTS")
        == ["GetConfiguration", "GetLocalListVersion"] + ["SendLocalList"] * 4
    )


async def test_a_push_cut_part_way_goes_on_where_it_stopped(start_edge: StartEdge) -> None:
    edge = await start_edge(push_local_list=True)
    await add_cards(edge, [f"CARD{number:03d}" for number in range(35)])
    version = card_version(edge)
    config = SimulatedChargerConfig(send_local_list_max_length=10)
    async with charger_at(edge, "CUT", config) as charger:
        taken = asyncio.Event()
        original = charger.on_send_local_list

        async def cut_after_two_parts(**arguments: Any) -> Any:
            answer = await original(**arguments)
            if len(charger.local_list_updates) == 2:
                taken.set()
                await asyncio.Event().wait()  # never answers: the link is cut instead
            return answer

        set_handler(charger, "SendLocalList", cut_after_two_parts)
        await asyncio.wait_for(taken.wait(), timeout=15)
        held, held_version = dict(charger.local_list), charger.local_list_version
    # The charger kept its list (20 cards, part 2's listVersion); the edge never heard
    # part 2's answer. It comes back without a boot, and gets parts 3 and 4 only.
    assert len(held) == 20 and held_version == version - 2
    await eventually(lambda: "offline" in outcomes(edge, "CUT"), within=15)
    async with charger_at(edge, "CUT", config, boot=False) as again:
        again.local_list, again.local_list_version = held, held_version
        await sync_local_list(edge.context, "CUT")
        assert again.local_list_updates == [
            ("Differential", version - 1, 10, "Accepted"),
            ("Differential", version, 5, "Accepted"),
        ]
        assert len(again.local_list) == 35
    assert listed_at_card_version(edge, "CUT")


def outcomes(edge: RunningEdge, charger_id: str) -> list[str]:
    rows = edge.query("SELECT outcome FROM commands WHERE charger_id = ?", (charger_id,))
    return [row[0] for row in rows]


async def test_charger_that_holds_fewer_cards_gets_its_own_first_then_the_recently_used(
    start_edge: StartEdge, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    edge = await start_edge(push_local_list=True, with_api=True)
    await add_cards(edge, [f"C{number:03d}" for number in range(40)])
    await add_cards(edge, ["BLOCKED1"], status="Blocked")
    await add_cards(edge, ["MINE1", "MINE2", "THEIRS1", "THEIRS2"])
    for card, charger_id in [
        ("MINE1", "SMALL"),
        ("MINE2", "SMALL"),
        ("MINE2", "OTHER"),
        ("THEIRS1", "OTHER"),
        ("THEIRS2", "OTHER"),
    ]:
        await edge.execute(
            "INSERT INTO id_tag_chargers (id_tag, charger_id) VALUES (?, ?)", (card, charger_id)
        )
    # Cards used at the site (at another charger), C033 last.
    async with charger_at(edge, "USER", SimulatedChargerConfig()) as user:
        for card in ("C039", "C017", "C033"):
            assert await user.authorize(card) == "Accepted"
    config = SimulatedChargerConfig(local_list_max_length=12, send_local_list_max_length=5)
    async with charger_at(edge, "SMALL", config) as charger:
        await eventually(lambda: listed_at_card_version(edge, "SMALL"), within=15)
        # Its own cards, the most recently used, then the rest: Accepted by idTag.
        expected = ["MINE1", "MINE2", "C033", "C017", "C039"] + [
            f"C{number:03d}" for number in range(7)
        ]
        assert sorted(charger.local_list) == sorted(expected)
        assert [update[2] for update in charger.local_list_updates] == [5, 5, 2]
        # The others are answered by the edge while it runs.
        assert "C020" not in charger.local_list and "BLOCKED1" not in charger.local_list
        assert await charger.authorize("C020") == "Accepted"
        assert await charger.authorize("BLOCKED1") == "Blocked"
    # 43 cards are for it: all but the two limited to another charger only.
    state = await local_list_state(edge, "SMALL")
    assert (state["held"], state["cards"], state["status"]) == (12, 43, "listed")
    assert state["why_not_all"].startswith("LocalAuthListMaxLength 12")
    assert state["limits"]["max_length"] == 12 and state["limits"]["send_max_length"] == 5
    line = next(
        line for line in cli_chargers(capsys, edge, tmp_path).splitlines() if "SMALL" in line
    )
    assert f"version {card_version(edge)}: held 12 of 43 (LocalAuthListMaxLength 12" in line


@pytest.mark.parametrize(
    ("reported", "reason"),
    [
        (
            {"SupportedFeatureProfiles": "Core,FirmwareManagement,SmartCharging"},
            "SupportedFeatureProfiles does not name LocalAuthListManagement",
        ),
        ({"LocalAuthListEnabled": "FALSE"}, "LocalAuthListEnabled is false"),
    ],
)
async def test_charger_without_the_feature_or_with_it_off_is_left_alone(
    start_edge: StartEdge,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    reported: dict[str, str | None],
    reason: str,
) -> None:
    edge = await start_edge(push_local_list=True)
    await add_cards(edge, ["CARD1", "CARD2"])
    config = SimulatedChargerConfig(reported_configuration=reported)
    async with charger_at(edge, "PLAIN", config) as charger:
        await eventually(lambda: (list_row(edge, "PLAIN") or {}).get("status") == "skipped")
        # The periodic check finds it behind, and still sends it nothing.
        await sync_local_list(edge.context, "PLAIN")
        assert charger.local_list_updates == []
    assert actions_sent(edge, "PLAIN") == ["GetConfiguration"]
    assert (list_row(edge, "PLAIN") or {})["detail"] == reason
    line = next(
        line for line in cli_chargers(capsys, edge, tmp_path).splitlines() if "PLAIN" in line
    )
    assert f"skipped: {reason}" in line


async def test_refused_list_is_not_tried_again_in_a_loop(
    start_edge: StartEdge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The periodic check runs ten times a second here.
    monkeypatch.setattr(edge.site_tasks, "EVERY_SECONDS", 0.1)
    running = await start_edge(push_local_list=True)
    await add_cards(running, [f"CARD{number:02d}" for number in range(20)])
    # It says it takes 100 entries a message but answers Failed beyond 5.
    config = SimulatedChargerConfig(
        send_local_list_max_length=5, reported_configuration={"SendLocalListMaxLength": "100"}
    )
    async with charger_at(running, "LIAR", config) as charger:
        await eventually(lambda: (list_row(running, "LIAR") or {}).get("status") == "refused")
        # Three seconds: some thirty rounds of the periodic check.
        await asyncio.sleep(3)
        assert charger.local_list_updates == [("Full", 20, 20, "Failed")]
        row = list_row(running, "LIAR")
        assert row is not None and row["failures"] == 1
        assert "answered Failed" in row["detail"] and row["retry_at"] > row["updated_at"]
        # Asked directly, still nothing: it waits.
        for _ in range(5):
            await sync_local_list(running.context, "LIAR")
        assert len(charger.local_list_updates) == 1
        # Its wait over, it is tried once, refuses again, and waits twice as long.
        await running.execute("UPDATE local_lists SET retry_at = '2000-01-01T00:00:00.000Z'")
        await sync_local_list(running.context, "LIAR")
        assert len(charger.local_list_updates) == 2
        row = list_row(running, "LIAR")
        assert row is not None and row["failures"] == 2
        assert seconds_between(row["updated_at"], row["retry_at"]) == pytest.approx(120, abs=2)
        # A card change tries again at once (and starts the count anew).
        await add_cards(running, ["NEW1"])
        await sync_local_list(running.context, "LIAR")
        assert len(charger.local_list_updates) == 3
        assert (list_row(running, "LIAR") or {})["failures"] == 1
        # So does a reboot.
        await charger.boot()
        await eventually(lambda: len(charger.local_list_updates) == 4)
    assert running.task.done() is False


def seconds_between(earlier: str, later: str) -> float:
    return (parse_timestamp(later) - parse_timestamp(earlier)).total_seconds()


@pytest.mark.parametrize(
    "reported",
    [
        {
            "SendLocalListMaxLength": "-5",
            "LocalAuthListMaxLength": "lots",
            "LocalAuthListEnabled": "maybe",
            "SupportedFeatureProfiles": None,
        },
        {
            "SendLocalListMaxLength": "99999999999999999999",
            "LocalAuthListMaxLength": "",
            "LocalAuthListEnabled": None,
        },
        {"SendLocalListMaxLength": None, "LocalAuthListMaxLength": "0"},
        {"SendLocalListMaxLength": "1e3", "LocalAuthListMaxLength": " 2.5 "},
    ],
)
async def test_garbage_in_the_keys_falls_back_to_the_defaults(
    start_edge: StartEdge, reported: dict[str, str | None]
) -> None:
    edge = await start_edge(push_local_list=True, with_api=True)
    await add_cards(edge, [f"CARD{number:03d}" for number in range(120)])
    # What it really takes is what the defaults assume (50 a message, 100 held).
    config = SimulatedChargerConfig(
        send_local_list_max_length=50, local_list_max_length=100, reported_configuration=reported
    )
    async with charger_at(edge, "ODD", config) as charger:
        await eventually(lambda: listed_at_card_version(edge, "ODD"), within=15)
        assert len(charger.local_list) == 100
        assert [update[2] for update in charger.local_list_updates] == [50, 50]
    state = await local_list_state(edge, "ODD")
    assert (state["held"], state["cards"]) == (100, 120)
    notes = state["limits"]["notes"]
    assert any(note.startswith("SendLocalListMaxLength") and "50 used" in note for note in notes)
    assert any(note.startswith("LocalAuthListMaxLength") and "100 used" in note for note in notes)


async def test_boot_of_thirty_chargers_with_two_thousand_cards(start_edge: StartEdge) -> None:
    edge = await start_edge(
        push_local_list=True,
        max_connections_per_address=100,
        limits={"frames_per_second": 1000, "frame_burst": 1000},
    )
    await add_cards(edge, [f"CARD{number:05d}" for number in range(2000)])
    # A mix of what real chargers report; every fifth without the feature.
    configs = {
        f"BOOT{number:02d}": SimulatedChargerConfig(
            connectors=1,
            send_local_list_max_length=(50, 100, 250, 500)[number % 4],
            local_list_max_length=(100, 300, 1000, 5000, 2500)[number % 5],
            feature_profiles="Core,SmartCharging"
            if number % 5 == 4
            else "Core,LocalAuthListManagement",
        )
        for number in range(30)
    }
    async with contextlib.AsyncExitStack() as stack:
        chargers = await asyncio.gather(
            *(
                stack.enter_async_context(charger_at(edge, charger_id, config))
                for charger_id, config in configs.items()
            )
        )

        def all_done() -> bool:
            rows = {
                row["charger_id"]: row["status"]
                for row in edge.query("SELECT charger_id, status, version FROM local_lists")
                if row["status"] == "skipped" or row["version"] == 2000
            }
            return len(rows) == len(configs)

        await eventually(all_done, within=180)
        for charger in chargers:
            config = configs[charger.id]
            if "LocalAuthListManagement" in config.feature_profiles:
                assert len(charger.local_list) == min(2000, config.local_list_max_length)
                assert charger.local_list_version == 2000
                sizes = [update[2] for update in charger.local_list_updates]
                assert max(sizes) <= config.send_local_list_max_length
                assert {update[3] for update in charger.local_list_updates} == {"Accepted"}
            else:
                assert charger.local_list_updates == []
    # Every charger's list came from one catalogue of the card table.
    assert edge.context.local_lists.catalogues_built == 1


async def test_operators_send_local_list_longer_than_the_charger_takes_is_refused(
    start_edge: StartEdge,
) -> None:
    """The edge's own pushes keep to SendLocalListMaxLength; an operator's SendLocalList,
    with entries of its own or filled from the card table, is refused with the reason
    (422) rather than sent to be answered Failed, once the charger has said its limit."""
    edge = await start_edge(push_local_list=True, with_api=True)
    await add_cards(edge, [f"CARD{number:03d}" for number in range(35)])
    config = SimulatedChargerConfig(send_local_list_max_length=10, local_list_max_length=1000)
    async with charger_at(edge, "SMALL", config) as charger:
        await eventually(lambda: listed_at_card_version(edge, "SMALL"), within=15)
        updates = list(charger.local_list_updates)
        sent = actions_sent(edge, "SMALL")

        def entries(count: int) -> list[dict[str, Any]]:
            accepted = {"status": "Accepted"}
            return [{"idTag": f"OP{n:03d}", "idTagInfo": accepted} for n in range(count)]

        url = f"http://127.0.0.1:{edge.api_port}/api/chargers/SMALL/commands/SendLocalList"
        async with httpx.AsyncClient() as client:
            too_long = {"listVersion": 500, "updateType": "Differential"} | {
                "localAuthorizationList": entries(11)
            }
            refused = await client.post(url, json=too_long)
            assert refused.status_code == 422, refused.text
            assert "at most 10 entries" in refused.text and "this one has 11" in refused.text
            filled = await client.post(url, json={"updateType": "Full"})  # 35 cards
            assert filled.status_code == 422, filled.text
            assert "this one has 35" in filled.text
            assert charger.local_list_updates == updates
            assert actions_sent(edge, "SMALL") == sent  # nothing recorded as sent

            fits = {"listVersion": 501, "updateType": "Differential"} | {
                "localAuthorizationList": entries(10)
            }
            answered = await client.post(url, json=fits)
            assert answered.status_code == 200, answered.text
            assert answered.json()["response"] == {"status": "Accepted"}
