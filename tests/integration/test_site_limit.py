"""The site power limit shared among three chargers as they start and stop, checked
numerically in the TxProfiles the simulated chargers actually hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from edge.ocpp.commands import InvalidArguments, send_command
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from edge.smart_charging import fair_shares, profile_problems
from tests.conftest import RunningEdge, StartEdge
from tests.waiting import eventually

SITE_LIMIT_W = 11000


async def limits_settle(chargers: list[SimulatedCharger], expected: list[float]) -> None:
    """Wait until each charger's connector 1 is held to its expected limit."""
    await eventually(lambda: [charger.composite_limit(1) for charger in chargers] == expected)


@pytest.fixture
async def three(start_edge: StartEdge) -> AsyncIterator[tuple[RunningEdge, list[SimulatedCharger]]]:
    edge = await start_edge(smart_charging={"site_limit_w": SITE_LIMIT_W, "connector_max_w": 7400})
    async with (
        connect(f"{edge.url}/A", subprotocols=[Subprotocol("ocpp1.6")]) as a,
        connect(f"{edge.url}/B", subprotocols=[Subprotocol("ocpp1.6")]) as b,
        connect(f"{edge.url}/C", subprotocols=[Subprotocol("ocpp1.6")]) as c,
    ):
        chargers = [
            SimulatedCharger(name, connection, SimulatedChargerConfig(connectors=1))
            for name, connection in (("A", a), ("B", b), ("C", c))
        ]
        listeners = [asyncio.create_task(charger.start()) for charger in chargers]
        for charger in chargers:
            await charger.boot()
        yield edge, chargers
        for listener in listeners:
            listener.cancel()


async def test_site_limit_is_shared_and_rebalanced(
    three: tuple[RunningEdge, list[SimulatedCharger]],
) -> None:
    edge, (a, b, c) = three
    unlimited = 22000.0  # the simulator's rating with no profile
    await a.start_transaction(1, "CARD-A")
    # Alone, A may take all 11 kW but its connector only does 7.4 kW.
    await limits_settle([a, b, c], [7400.0, unlimited, unlimited])
    await b.start_transaction(1, "CARD-B")
    await limits_settle([a, b, c], [5500.0, 5500.0, unlimited])
    await c.start_transaction(1, "CARD-C")
    await limits_settle([a, b, c], [3666.6, 3666.6, 3666.6])
    assert sum(charger.composite_limit(1) for charger in (a, b, c)) <= SITE_LIMIT_W
    await a.stop_transaction(1)
    await limits_settle([a, b, c], [3666.6, 5500.0, 5500.0])  # A keeps its old, ended profile
    await b.stop_transaction(1)
    await limits_settle([a, b, c], [3666.6, 5500.0, 7400.0])
    # The edge's own record of what each charger holds, once the last answer is stored.
    accepted = (
        "SELECT charger_id, json_extract(profile, '$.chargingSchedule.chargingSchedulePeriod[0].limit') "
        "FROM charging_profiles WHERE source = 'site_limit' AND status = 'Accepted' ORDER BY charger_id"
    )
    expected = [("A", 3666.6), ("B", 5500.0), ("C", 7400.0)]
    await eventually(lambda: [tuple(row) for row in edge.query(accepted)] == expected)
    # Sent only where a share changed: A; A, B; A, B, C; B, C; C.
    sent = edge.query(
        "SELECT charger_id FROM commands WHERE action = 'SetChargingProfile' ORDER BY id"
    )
    assert "".join(row[0] for row in sent) == "AABABCBCC"


def test_fair_shares_never_exceed_the_limit() -> None:
    assert fair_shares(11000, {("A", 1): 22000}) == {("A", 1): 11000.0}
    three = fair_shares(11000, {("A", 1): 22000, ("B", 1): 22000, ("C", 1): 22000})
    assert set(three.values()) == {3666.6} and sum(three.values()) <= 11000
    capped = fair_shares(11000, {("A", 1): 2000, ("B", 1): 22000, ("C", 1): 22000})
    assert capped == {("A", 1): 2000.0, ("B", 1): 4500.0, ("C", 1): 4500.0}
    assert fair_shares(11000, {}) == {}


def test_profile_checks() -> None:
    good = {
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 10},
                {"startPeriod": 60, "limit": 5},
            ]
        },
    }
    assert profile_problems(1, good) == []
    assert profile_problems(1, {**good, "chargingProfilePurpose": "ChargePointMaxProfile"}) == [
        "a ChargePointMaxProfile goes to connector 0"
    ]
    assert "a TxProfile names its transactionId" in profile_problems(
        1, {**good, "chargingProfilePurpose": "TxProfile"}
    )
    backwards = {
        **good,
        "chargingSchedule": {
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 1},
                {"startPeriod": 0, "limit": 2},
            ]
        },
    }
    assert profile_problems(1, backwards) == ["startPeriod values must increase"]
    late = {
        **good,
        "chargingSchedule": {"chargingSchedulePeriod": [{"startPeriod": 5, "limit": 1}]},
    }
    assert profile_problems(1, late) == ["the first chargingSchedulePeriod starts at startPeriod 0"]


async def test_invalid_profile_is_refused_before_sending(start_edge: StartEdge) -> None:
    edge = await start_edge()
    await edge.execute("INSERT INTO chargers (id, created_at) VALUES ('X', 'x')")
    profile = {
        "chargingProfileId": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": {
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1000}],
        },
    }
    async with connect(f"{edge.url}/X", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        charger = SimulatedCharger("X", connection, SimulatedChargerConfig())
        listener = asyncio.create_task(charger.start())
        await charger.boot()
        with pytest.raises(InvalidArguments, match="names its transactionId"):
            await send_command(
                edge.context,
                "X",
                "SetChargingProfile",
                {"connector_id": 1, "cs_charging_profiles": profile},
            )
        listener.cancel()
    assert edge.query("SELECT count(*) FROM commands")[0][0] == 0
