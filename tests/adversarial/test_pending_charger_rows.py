"""Unknown chargers under `unknown_chargers = "pending"`: each new id adds a row, so the
rows are bounded by count (refused at the handshake beyond it) and by age (a pending
charger unseen for `pending_charger_days` is forgotten, with what hangs off it)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

import edge.site_tasks
from edge.cli import main
from tests.conftest import RunningEdge, StartEdge
from tests.ocpp_client import RawCharger
from tests.waiting import eventually

DEFAULT_MAX_PENDING = 50


def pending_count(edge: RunningEdge) -> int:
    return int(edge.query("SELECT count(*) FROM chargers WHERE registration = 'pending'")[0][0])


async def test_pending_chargers_are_bounded_by_count(start_edge: StartEdge) -> None:
    edge = await start_edge(unknown_chargers="pending")
    await edge.execute(
        "INSERT INTO chargers (id, registration, created_at) VALUES ('KNOWN', 'accepted', 'x')"
    )
    for number in range(DEFAULT_MAX_PENDING):
        async with RawCharger(edge.url, f"STRANGER-{number}") as charger:
            assert (await charger.boot())["status"] == "Pending"
    assert pending_count(edge) == DEFAULT_MAX_PENDING

    with pytest.raises(InvalidStatus) as refused:
        async with RawCharger(edge.url, "ONE-TOO-MANY"):
            pass
    response = refused.value.response
    assert response.status_code == 503
    assert "waiting for acceptance" in response.body.decode()
    assert response.headers["Retry-After"]
    assert pending_count(edge) == DEFAULT_MAX_PENDING
    assert edge.query("SELECT * FROM chargers WHERE id = 'ONE-TOO-MANY'") == []

    # Chargers the site knows are not held back, nor is a pending one coming back.
    async with RawCharger(edge.url, "KNOWN") as charger:
        assert (await charger.boot())["status"] == "Accepted"
    async with RawCharger(edge.url, "STRANGER-7") as charger:
        assert (await charger.boot())["status"] == "Pending"
    # Accepting one makes room for one more.
    await edge.execute("UPDATE chargers SET registration = 'accepted' WHERE id = 'STRANGER-0'")
    async with RawCharger(edge.url, "ONE-TOO-MANY") as charger:
        assert (await charger.boot())["status"] == "Pending"


def insert_charger(charger_id: str, registration: str, seen: str) -> str:
    return (
        "INSERT INTO chargers (id, registration, created_at, last_seen_at) "
        f"VALUES ('{charger_id}', '{registration}', '{seen}', '{seen}')"
    )


def write_together(path: Path, statements: list[str]) -> None:
    """One transaction, from another connection (as the CLI would write)."""
    connection = sqlite3.connect(path, timeout=10)
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        with connection:
            for statement in statements:
                connection.execute(statement)
    finally:
        connection.close()


async def test_pending_chargers_unseen_for_days_are_forgotten(
    start_edge: StartEdge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge.site_tasks, "EVERY_SECONDS", 0.2)
    running = await start_edge(unknown_chargers="pending")
    long_ago, lately = "2020-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z"
    statements = [
        insert_charger(charger_id, registration, seen)
        for charger_id, registration, seen in (
            ("OLD-PENDING", "pending", long_ago),
            ("OLD-ACCEPTED", "accepted", long_ago),
            ("OLD-REJECTED", "rejected", long_ago),
            ("NEW-PENDING", "pending", lately),
            ("OLD-PENDING-BILLED", "pending", long_ago),
        )
    ]
    # What an old pending charger left behind: status, events, a certificate request...
    statements += [
        "INSERT INTO connectors (charger_id, connector_id, status, error_code, received_at) "
        "VALUES ('OLD-PENDING', 1, 'Available', 'NoError', 'x')",
        "INSERT INTO status_history (charger_id, connector_id, status, error_code, received_at) "
        "VALUES ('OLD-PENDING', 1, 'Available', 'NoError', 'x')",
        "INSERT INTO security_events (charger_id, type, charger_timestamp, received_at) "
        "VALUES ('OLD-PENDING', 'EdgeRefusedConnection', 'x', 'x')",
        "INSERT INTO data_transfers (charger_id, vendor_id, response_status, received_at) "
        "VALUES ('OLD-PENDING', 'v', 'Rejected', 'x')",
        "INSERT INTO charger_job_status (charger_id, kind, status, received_at) "
        "VALUES ('OLD-PENDING', 'firmware', 'Idle', 'x')",
        "INSERT INTO certificate_requests (charger_id, csr, received_at) "
        "VALUES ('OLD-PENDING', 'csr', 'x')",
        "INSERT INTO reservations (charger_id, connector_id, id_tag, expiry_date, created_at, "
        "updated_at) VALUES ('OLD-PENDING', 1, 'CARD', 'x', 'x', 'x')",
        # ... and one whose transaction is money on record: never deleted.
        "INSERT INTO transactions (charger_id, connector_id, id_tag, id_tag_status, "
        "meter_start_wh, started_at, start_received_at) "
        "VALUES ('OLD-PENDING-BILLED', 1, 'CARD', 'Accepted', 0, 'x', 'x')",
    ]
    await asyncio.to_thread(write_together, running.db_path, statements)
    # A pending charger connected right now is not forgotten, however old its row.
    async with RawCharger(running.url, "CONNECTED-PENDING") as charger:
        await charger.boot()
        await running.execute(
            "UPDATE chargers SET created_at = ?, last_seen_at = ? WHERE id = 'CONNECTED-PENDING'",
            (long_ago, long_ago),
        )
        # Every row is in place: from now on the edge looks for stale ones often.
        monkeypatch.setattr(edge.site_tasks, "FORGET_PENDING_EVERY_SECONDS", 0.2)
        await eventually(
            lambda: not running.query("SELECT 1 FROM chargers WHERE id = 'OLD-PENDING'"),
            within=10,
        )
        remaining = {row[0] for row in running.query("SELECT id FROM chargers")}
        assert remaining == {
            "OLD-ACCEPTED",
            "OLD-REJECTED",
            "NEW-PENDING",
            "OLD-PENDING-BILLED",
            "CONNECTED-PENDING",
        }
        for table in (
            "connectors",
            "status_history",
            "security_events",
            "data_transfers",
            "charger_job_status",
            "certificate_requests",
            "reservations",
        ):
            assert running.query(f"SELECT * FROM {table} WHERE charger_id = 'OLD-PENDING'") == []
        assert len(running.query("SELECT * FROM transactions")) == 1
        # Still served: a pending charger may send BootNotification (OCPP 1.6 section 4.2).
        assert (await charger.boot())["status"] == "Pending"


async def test_chargers_command_shows_how_many_are_pending(
    start_edge: StartEdge, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await start_edge(unknown_chargers="pending")
    for number in range(3):
        async with RawCharger(running.url, f"STRANGER-{number}") as charger:
            await charger.boot()
    config = running.db_path.parent / "cli.toml"
    config.write_text(f'[store]\npath = "{running.db_path}"\n')
    capsys.readouterr()
    assert main(["chargers", "--config", str(config)]) == 0
    output = capsys.readouterr().out
    assert "3 pending" in output
