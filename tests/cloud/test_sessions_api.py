"""The sessions and tariffs API through the real ASGI app (token checks, body limits and
routes as served), on SQLite and PostgreSQL: pages with a cursor, sums, the CSV of
exactly what the filters select, meter curves, month closing, tariffs and their costs."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from cloud.api import create_cloud_api, protect_cloud_api
from cloud.settings import CloudSettings
from cloud.store.ingest import record_status, store_batch
from cloud.store.tariffs import reprice_all
from cloud.store.times import iso, parse_time
from tests.cloud.payloads import batch, event, status
from tests.cloud.test_sessions_store import T0, Site, stopped

TOKEN = "sessions-test-token"


@pytest.fixture
async def api(engine: Engine, tmp_path: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = CloudSettings(
        api={"token": TOKEN},
        firmware={"directory": tmp_path / "firmware"},
        sessions={"time_zone": "Europe/Berlin", "max_meter_samples": 50},
    )
    app = create_cloud_api(settings, engine, Ed25519PrivateKey.generate())
    served = protect_cloud_api(app, settings.api, settings.firmware.max_image_bytes)
    transport = httpx.ASGITransport(app=served, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://127.0.0.1:8090",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


async def all_pages(api: httpx.AsyncClient, limit: int, **filters: str) -> list[dict[str, Any]]:
    sessions: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = filters | {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        answer = await api.get("/api/sessions", params=params)
        assert answer.status_code == 200, answer.text
        sessions += answer.json()["sessions"]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return sessions


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_every_sessions_route_needs_the_token(api: httpx.AsyncClient) -> None:
    for path in (
        "/api/sessions",
        "/api/sessions.csv",
        "/api/sessions/sums?group=card",
        "/api/sessions/site-1/1/meter",
        "/api/months",
        "/api/tariffs",
    ):
        answer = await api.get(path, headers={"Authorization": "Bearer wrong"})
        assert answer.status_code == 401, path
    refused = await api.post("/api/tariffs", json={}, headers={"Authorization": ""})
    assert refused.status_code == 401


async def test_pages_filters_and_the_offline_marker(engine: Engine, api: httpx.AsyncClient) -> None:
    site = Site(engine)
    for number in range(1, 8):
        site.session(number, T0 + timedelta(hours=number), card=f"CARD-{number % 2}", parent="ACME")
    # In April, recorded offline: its events arrive five hours late.
    site.session(8, T0 + timedelta(days=40), card="CARD-9", received=timedelta(hours=5))

    newest_first = await all_pages(api, 3)
    assert [s["transaction_id"] for s in newest_first] == [8, 7, 6, 5, 4, 3, 2, 1]
    offline = newest_first[0]
    assert offline["recorded_offline"] is True
    assert parse_time(offline["synced_at"]) == T0 + timedelta(days=40, hours=6)
    live = newest_first[1]
    assert (live["recorded_offline"], live["account"], live["energy_wh"]) == (False, "ACME", 10_000)
    assert (live["duration_s"], live["running"], live["cost"]) == (3600.0, False, None)
    assert live["started_at"] == "2026-03-02T17:00:00Z"

    assert [s["transaction_id"] for s in await all_pages(api, 2, card="CARD-1")] == [7, 5, 3, 1]
    assert [s["transaction_id"] for s in await all_pages(api, 2, month="2026-04")] == [8]
    period = {"from": "2026-03-02T12:30:00Z", "to": "2026-03-02T15:00:00+00:00"}
    assert [s["transaction_id"] for s in await all_pages(api, 10, **period)] == [4, 3]
    # A date is its midnight in sessions.time_zone (Berlin: 23:00 UTC the day before).
    assert len(await all_pages(api, 10, **{"from": "2026-03-03"})) == 1

    for params, message in (
        ({"cursor": "bm9wZQ"}, "is not a cursor"),
        ({"from": "2026-03-02T10:00:00"}, "needs an offset"),
        ({"from": "yesterday"}, "not a date or an ISO time"),
        ({"month": "2026-13"}, "is not a month"),
        ({"month": "2026-03", "from": "2026-03-01"}, "not both"),
    ):
        answer = await api.get("/api/sessions", params=params)
        assert answer.status_code == 422 and message in answer.text, params
    assert (await api.get("/api/sessions", params={"limit": 1001})).status_code == 422


async def test_the_csv_is_exactly_the_filtered_sessions_with_cost_and_marker(
    engine: Engine, api: httpx.AsyncClient
) -> None:
    created = await api.post(
        "/api/tariffs",
        json={
            "name": "home charging",
            "currency": "EUR",
            "valid_from": "2026-01-01T00:00:00Z",
            "price_per_kwh": 0.2734,
        },
    )
    assert created.status_code == 201, created.text
    site = Site(engine)
    # More sessions than one page of the export, in one batch: starts and stops.
    start = T0
    datas: list[dict[str, Any]] = []
    for number in range(1, 1101):
        at = start + timedelta(minutes=number)
        datas.append(started(number, at, card="CARD-A" if number % 3 else "=HYPERLINK(1)"))
        datas.append(stopped(number, number, at + timedelta(seconds=30)))
    payload = batch(site.edge_id, [event(seq, data, iso(T0)) for seq, data in enumerate(datas, 1)])
    assert (
        store_batch(engine, site.edge_id, payload, 4_000_000, now=T0 + timedelta(hours=1)).rejected
        is None
    )
    site.seqs = iter(range(len(datas) + 1, 10**6))

    export = await api.get("/api/sessions.csv")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = csv_rows(export.text)
    assert [int(row["transaction_id"]) for row in rows] == list(range(1100, 0, -1))
    first = rows[0]
    assert first["energy_wh"] == "1100" and first["energy_kwh"] == "1.100"
    assert (first["cost"], first["currency"], first["tariff"]) == ("0.30", "EUR", "home charging")
    assert (first["recorded_offline"], first["duration_s"]) == ("yes", "30")
    assert first["synced_at"] == "2026-03-02T11:00:00Z"
    # A card that is a formula reaches a spreadsheet as text.
    assert rows[2]["id_tag"] == "'=HYPERLINK(1)"

    # The same filters as the page give the same sessions.
    filters = {"card": "CARD-A", "from": iso(T0 + timedelta(minutes=500))}
    shown = await all_pages(api, 250, **filters)
    exported = csv_rows((await api.get("/api/sessions.csv", params=filters)).text)
    assert [int(row["transaction_id"]) for row in exported] == [s["transaction_id"] for s in shown]
    assert len(shown) == len([n for n in range(500, 1101) if n % 3])
    assert [row["cost"] for row in exported[:2]] == [s["cost"] for s in shown[:2]]


async def test_a_sessions_meter_curve(engine: Engine, api: httpx.AsyncClient) -> None:
    site = Site(engine)
    site.session(3, T0, minutes=60, energy_wh=6000, samples=5)
    answer = await api.get("/api/sessions/site-1/3/meter")
    assert answer.status_code == 200
    body = answer.json()
    assert body["session"]["transaction_id"] == 3 and body["max_samples"] == 50
    assert [s["energy_wh"] for s in body["samples"]] == [1000, 2000, 3000, 4000, 5000]
    assert body["samples"][0] == {
        "at": "2026-03-02T10:10:00Z",
        "meter_wh": 1500,
        "energy_wh": 1000,
        "power_w": 7400.0,
    }
    assert (await api.get("/api/sessions/site-1/4/meter")).status_code == 404
    assert (await api.get(f"/api/sessions/site-1/{2**70}/meter")).status_code == 404
    assert (await api.get("/api/sessions/a%2Bb/3/meter")).status_code == 422


async def test_sums_per_card_account_and_month(engine: Engine, api: httpx.AsyncClient) -> None:
    site = Site(engine)
    site.session(1, parse_time("2026-02-28T23:30:00Z"), energy_wh=1000, card="A", parent="P")
    site.session(2, parse_time("2026-02-10T10:00:00Z"), energy_wh=2000, card="B", parent="P")
    by_month = (await api.get("/api/sessions/sums", params={"group": "month"})).json()
    # Berlin: 23:30 UTC on 28 February is March.
    assert by_month["time_zone"] == "Europe/Berlin"
    assert [(s["key"], s["sessions"], s["energy_wh"]) for s in by_month["sums"]] == [
        ("2026-03", 1, 1000),
        ("2026-02", 1, 2000),
    ]
    by_account = (await api.get("/api/sessions/sums", params={"group": "account"})).json()
    assert by_account["sums"] == [
        {
            "key": "P",
            "sessions": 2,
            "energy_wh": 3000,
            "running": 0,
            "unpriced": 2,
            "costs_minor": {},
            "cost_recalculating": False,
        }
    ]
    by_card = (await api.get("/api/sessions/sums", params={"group": "card", "card": "A"})).json()
    assert [s["key"] for s in by_card["sums"]] == ["A"]
    assert (await api.get("/api/sessions/sums", params={"group": "site"})).status_code == 422


async def test_months_say_final_or_provisional_and_why(
    engine: Engine, api: httpx.AsyncClient
) -> None:
    site = Site(engine)
    site.session(1, parse_time("2026-01-15T10:00:00Z"))
    site.session(2, parse_time("2026-02-15T10:00:00Z"))
    assert record_status(
        engine, "site-1", status("online", backlog=0), now=parse_time("2026-02-15T12:00:00Z")
    )
    assert record_status(
        engine, "site-1", status("offline", backlog=4), now=parse_time("2026-02-15T13:00:00Z")
    )
    answer = await api.get("/api/months", params={"edge": "site-1", "month": "2026-01"})
    assert answer.status_code == 200
    (january,) = answer.json()
    assert (january["month"], january["state"], january["reasons"]) == ("2026-01", "final", [])
    assert parse_time(january["start"]) == parse_time("2025-12-31T23:00:00Z")  # Berlin
    assert (january["sessions"], january["energy_wh"]) == (1, 10_000)
    (february,) = (await api.get("/api/months", params={"month": "2026-02"})).json()
    assert february["state"] == "provisional"
    assert february["reasons"] == [
        "edge offline since 2026-02-15T13:00:00.000Z",
        "its data reaches 2026-02-15T11:00:00.000Z, not past the month's end",
        "backlog 4 events at 2026-02-15T13:00:00.000Z",
    ]
    recent = (await api.get("/api/months", params={"edge": "site-1", "count": 3})).json()
    assert len(recent) == 3 and recent[0]["reasons"][0] == "the month has not ended"
    assert (await api.get("/api/months", params={"edge": "nowhere"})).status_code == 404
    assert (await api.get("/api/months", params={"month": "March"})).status_code == 422
    assert (await api.get("/api/months", params={"count": 0})).status_code == 422


async def test_tariffs_are_added_changed_and_removed_with_their_sessions_repriced(
    engine: Engine, api: httpx.AsyncClient
) -> None:
    site = Site(engine)
    site.session(1, parse_time("2026-03-02T21:00:00Z"), minutes=120, energy_wh=12_000, samples=11)
    body: dict[str, Any] = {
        "name": "time of use",
        "currency": "EUR",
        "time_zone": "UTC",
        "valid_from": "2026-03-01T00:00:00+00:00",
        "price_per_kwh": "0.20",
        "bands": [
            {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "start": "07:00",
                "end": "22:00",
                "price_per_kwh": 0.4,
            }
        ],
    }
    created = await api.post("/api/tariffs", json=body)
    assert created.status_code == 201, created.text
    tariff = created.json()
    assert len(tariff["repricing"]) == 1 and tariff["price_per_kwh"] == "0.2"
    # Priced again in the background: until then the session says so.
    (session,) = (await api.get("/api/sessions")).json()["sessions"]
    assert (session["cost"], session["cost_recalculating"]) == (None, True)
    (job,) = (await api.get("/api/repricing")).json()
    assert job["id"] == tariff["repricing"][0] and job["reason"] == f"tariff {tariff['id']} added"
    assert reprice_all(engine) == 1
    assert (await api.get("/api/repricing")).json() == []
    assert tariff["bands"] == [
        {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "07:00",
            "end": "22:00",
            "price_per_kwh": "0.4",
        }
    ]
    (session,) = (await api.get("/api/sessions")).json()["sessions"]
    assert (session["cost"], session["cost_minor"], session["currency"]) == ("3.60", 360, "EUR")
    assert session["cost_recalculating"] is False
    assert session["tariff_name"] == "time of use"

    # A site's own tariff replaces it there.
    own = await api.post(
        "/api/tariffs",
        json=body | {"edge_id": "site-1", "name": "site", "bands": [], "price_per_kwh": "0.1"},
    )
    assert own.status_code == 201 and len(own.json()["repricing"]) == 1
    assert reprice_all(engine) == 1
    (session,) = (await api.get("/api/sessions")).json()["sessions"]
    assert session["cost"] == "1.20"
    listed = (await api.get("/api/tariffs", params={"edge": "site-1"})).json()
    assert {t["name"] for t in listed} == {"time of use", "site"}

    changed = await api.put(
        f"/api/tariffs/{own.json()['id']}",
        json=body | {"edge_id": "site-1", "name": "site", "bands": [], "price_per_kwh": "0.5"},
    )
    assert changed.status_code == 200 and len(changed.json()["repricing"]) == 1
    assert reprice_all(engine) == 1
    assert (await api.get(f"/api/tariffs/{own.json()['id']}")).json()["price_per_kwh"] == "0.5"
    (session,) = (await api.get("/api/sessions")).json()["sessions"]
    assert session["cost"] == "6.00"
    removed = await api.delete(f"/api/tariffs/{own.json()['id']}")
    assert removed.status_code == 200 and len(removed.json()["repricing"]) == 1
    assert reprice_all(engine) == 1
    (session,) = (await api.get("/api/sessions")).json()["sessions"]
    assert session["cost"] == "3.60"

    refusals = [
        (body | {"time_zone": "Mars/Olympus"}, "not a time zone"),
        (body | {"price_per_kwh": "0.1234567"}, "decimal"),
        (body | {"price_per_kwh": -1}, "greater than 0"),
        (body | {"price_per_kwh": 0}, "greater than 0"),
        (body | {"valid_until": "2026-02-01T00:00:00Z"}, "ends after it starts"),
        (body | {"edge_id": "site-1", "fleet_id": 1}, "give a site or a fleet"),
        (body | {"valid_from": "2026-03-01T00:00:00"}, "timezone"),
        (body | {"currency": "euro"}, "pattern"),
        (body | {"valid_from": "2026-03-01T00:00:00Z"}, "same scope starts at the same time"),
        (body | {"bands": [body["bands"][0], body["bands"][0]]}, "overlap"),
        (body | {"bands": [body["bands"][0] | {"start": "7pm"}]}, "HH:MM"),
        (body | {"bands": [body["bands"][0] | {"days": ["someday"]}]}, "days"),
        (body | {"surprise": 1}, "extra"),
        (body | {"edge_id": "a/b"}, "pattern"),
    ]
    for refused, message in refusals:
        answer = await api.post("/api/tariffs", json=refused)
        assert answer.status_code == 422 and message in answer.text, (refused, answer.text)
    assert (await api.get("/api/tariffs/999")).status_code == 404
    assert (await api.get(f"/api/tariffs/{2**40}")).status_code == 404
    assert (await api.delete("/api/tariffs/999")).status_code == 404
    assert (await api.put("/api/tariffs/999", json=body)).status_code == 404
    assert len((await api.get("/api/tariffs")).json()) == 1


def started(transaction_id: int, at: datetime, card: str = "CARD-1") -> dict[str, Any]:
    return {
        "kind": "transaction.started",
        "charger_id": "CP-1",
        "connector_id": 1,
        "transaction_id": transaction_id,
        "id_tag": card,
        "id_tag_status": "Accepted",
        "meter_start_wh": 0,
        "started_at": iso(at),
    }


async def test_times_past_the_calendar_are_refused_not_failed(api: httpx.AsyncClient) -> None:
    late = {"from": "9999-12-31T23:00:00-05:00"}
    answer = await api.get("/api/sessions", params=late)
    assert answer.status_code == 422 and "beyond the times" in answer.text
    tariff = {
        "name": "x",
        "currency": "EUR",
        "valid_from": "9999-12-31T23:00:00-05:00",
        "price_per_kwh": "1",
    }
    answer = await api.post("/api/tariffs", json=tariff)
    assert answer.status_code == 422 and "beyond the times" in answer.text


async def test_the_list_the_sums_and_the_csv_take_the_same_seven_filters(
    api: httpx.AsyncClient,
) -> None:
    schema = (await api.get("/openapi.json")).json()
    filters = {"edge", "charger", "card", "account", "from", "to", "month"}
    for path, extra in (
        ("/api/sessions", {"cursor", "limit"}),
        ("/api/sessions/sums", {"group"}),
        ("/api/sessions.csv", set()),
    ):
        names = {parameter["name"] for parameter in schema["paths"][path]["get"]["parameters"]}
        assert names == filters | extra, path
    # One check of them all: each route refuses a month with a period alike.
    both = {"month": "2026-03", "from": "2026-03-01"}
    for path, params in (
        ("/api/sessions", both),
        ("/api/sessions/sums", both | {"group": "card"}),
        ("/api/sessions.csv", both),
    ):
        answer = await api.get(path, params=params)
        assert answer.status_code == 422 and "not both" in answer.text, path
