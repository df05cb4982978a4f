"""Presence: connected/last seen, reconnect without boot, a second connection replaces the first."""

from __future__ import annotations

import asyncio

from websockets.exceptions import ConnectionClosed

from tests.conftest import RunningEdge
from tests.ocpp_client import RawCharger
from tests.waiting import eventually


async def test_connected_flag_and_last_seen_follow_the_connection(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        await charger.boot()
        row = edge.query("SELECT connected, last_seen_at, last_boot_at FROM chargers")[0]
        assert row["connected"] == 1 and row["last_seen_at"] and row["last_boot_at"]
    await eventually(lambda: edge.query("SELECT connected FROM chargers")[0][0] == 0)
    assert edge.query("SELECT disconnected_at FROM chargers")[0][0] is not None


async def test_reconnecting_charger_resumes_without_boot(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        await charger.boot()
    async with RawCharger(edge.url, "CP1") as charger:
        started = await charger.ok(
            "StartTransaction",
            {
                "connectorId": 1,
                "idTag": "ANY",
                "meterStart": 0,
                "timestamp": "2026-01-01T00:00:00Z",
            },
        )
        assert started["transactionId"] >= 1
        assert (await charger.ok("Heartbeat", {}))["currentTime"]


async def test_second_connection_replaces_the_first(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as first:
        await first.boot()
        async with RawCharger(edge.url, "CP1") as second:
            assert first.connection is not None
            await asyncio.wait_for(first.connection.wait_closed(), timeout=5)
            assert first.connection.close_code == 1001
            assert (await second.ok("Heartbeat", {}))["currentTime"]
            # The old connection's end must not mark the charger offline.
            assert edge.query("SELECT connected FROM chargers")[0][0] == 1
            try:
                await first.call("Heartbeat", {})
                raise AssertionError("the replaced connection still answers")
            except ConnectionClosed:
                pass


async def test_every_frame_is_logged_both_ways_with_correlation_id(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        await charger.boot()
        await charger.ok("Heartbeat", {})
    await eventually(lambda: len(edge.query("SELECT * FROM ocpp_messages")) >= 4)
    rows = edge.query("SELECT * FROM ocpp_messages ORDER BY id")
    assert [(r["direction"], r["action"], r["message_type"]) for r in rows] == [
        ("in", "BootNotification", 2),
        ("out", "BootNotification", 3),
        ("in", "Heartbeat", 2),
        ("out", "Heartbeat", 3),
    ]
    assert rows[0]["unique_id"] == rows[1]["unique_id"] != rows[2]["unique_id"]
    assert all(r["at_ms"] > 1_700_000_000_000 for r in rows)
    assert '"BootNotification"' in rows[0]["payload"]
