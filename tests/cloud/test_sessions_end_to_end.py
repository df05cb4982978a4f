"""A session for real: the edge daemon with a simulated charger, mosquitto, and the
aggregator on SQLite and PostgreSQL. A card with an account charges; the fleet manager
sees the session with its account, meter curve and cost in the API and the CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import (
    STORES,
    RunningCloud,
    RunningEdge,
    StartCloud,
    StartEdge,
    charger_at,
    cloud_on_store,
)
from tests.mosquitto import Mosquitto
from tests.waiting import eventually_answers

EDGE = "site-5"


@pytest.fixture(params=STORES)
async def cloud(
    request: pytest.FixtureRequest, broker: Mosquitto, start_cloud: StartCloud
) -> RunningCloud:
    return await cloud_on_store(request, broker, start_cloud)


@pytest.fixture
async def site(
    start_edge: StartEdge, broker: Mosquitto, cloud: RunningCloud
) -> AsyncIterator[tuple[RunningEdge, SimulatedCharger]]:
    sync = {"edge_id": EDGE, "broker_host": "127.0.0.1", "broker_port": broker.port, "keepalive": 5}
    edge = await start_edge(sections={"sync": sync})
    async with charger_at(edge, SimulatedChargerConfig(connectors=1)) as charger:
        yield edge, charger


async def test_a_charged_session_reaches_the_fleet_manager_with_account_curve_and_cost(
    cloud: RunningCloud, site: tuple[RunningEdge, SimulatedCharger]
) -> None:
    edge, charger = site
    async with httpx.AsyncClient(
        base_url=cloud.api_url, headers=cloud.api_headers, timeout=10
    ) as api:
        tariff = {
            "name": "company cars",
            "currency": "EUR",
            "valid_from": "2020-01-01T00:00:00Z",
            "price_per_kwh": "0.30",
        }
        assert (await api.post("/api/tariffs", json=tariff)).status_code == 201
        await edge.execute(
            "INSERT INTO id_tags (id_tag, status, parent_id_tag, created_at, updated_at) "
            "VALUES ('CAR-17', 'Accepted', 'ACME-FLEET', 'x', 'x')"
        )
        transaction_id, status = await charger.start_transaction(1, "CAR-17")
        assert status == "Accepted"
        await charger.send_meter_values(1, 1800)  # 3.6 kWh at the simulator's 7.2 kW
        await charger.stop_transaction(1)

        async def stopped_session() -> dict[str, Any] | None:
            answer = await api.get("/api/sessions", params={"account": "ACME-FLEET"})
            sessions = answer.json()["sessions"]
            return sessions[0] if sessions and not sessions[0]["running"] else None

        async def arrived() -> bool:
            return await stopped_session() is not None

        await eventually_answers(arrived, within=15)
        session = await stopped_session()
        assert session is not None
        assert (session["edge_id"], session["transaction_id"]) == (EDGE, transaction_id)
        assert (session["id_tag"], session["account"], session["charger_id"]) == (
            "CAR-17",
            "ACME-FLEET",
            "CP1",
        )
        assert session["energy_wh"] == 3600
        assert (session["cost"], session["currency"], session["recorded_offline"]) == (
            "1.08",
            "EUR",
            False,
        )
        curve = (await api.get(f"/api/sessions/{EDGE}/{transaction_id}/meter")).json()
        assert [sample["energy_wh"] for sample in curve["samples"]] == [3600]
        export = await api.get("/api/sessions.csv", params={"account": "ACME-FLEET"})
        (row,) = csv.DictReader(io.StringIO(export.text))
        assert (row["id_tag"], row["account"], row["cost"], row["energy_kwh"]) == (
            "CAR-17",
            "ACME-FLEET",
            "1.08",
            "3.600",
        )
