"""Who may connect: path, charger id, subprotocol, registration."""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import RunningEdge, StartEdge
from tests.ocpp_client import RawCharger


async def refusal(
    url: str, charger_id: str, subprotocols: list[str] | None = None
) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as refused:
        async with RawCharger(url, charger_id, subprotocols):
            pass
    response = refused.value.response
    return response.status_code, response.body.decode()


async def test_handshake_without_ocpp16_subprotocol_is_refused_with_reason(
    edge: RunningEdge,
) -> None:
    status, body = await refusal(edge.url, "CP1", subprotocols=[])
    assert status == 400
    assert "ocpp1.6" in body and "offered: none" in body
    status, body = await refusal(edge.url, "CP1", subprotocols=["ocpp2.0.1"])
    assert status == 400 and "offered: ocpp2.0.1" in body


async def test_wrong_path_and_unsafe_charger_id_are_refused(edge: RunningEdge) -> None:
    base = edge.url.removesuffix("/ocpp")
    status, body = await refusal(f"{base}/elsewhere", "CP1")
    assert status == 404 and "/ocpp/<charger_id>" in body
    status, body = await refusal(edge.url, "bad%20id")
    assert status == 400 and "charger id" in body


async def test_subprotocol_is_negotiated(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        assert charger.connection is not None
        assert charger.connection.subprotocol == "ocpp1.6"


async def test_reject_mode_refuses_unknown_but_admits_registered(start_edge: StartEdge) -> None:
    edge = await start_edge(unknown_chargers="reject")
    status, body = await refusal(edge.url, "STRANGER")
    assert status == 403 and "not registered" in body
    assert edge.query("SELECT * FROM chargers") == []
    await edge.execute(
        "INSERT INTO chargers (id, registration, created_at) VALUES ('KNOWN', 'accepted', 'x')"
    )
    async with RawCharger(edge.url, "KNOWN") as charger:
        assert (await charger.boot())["status"] == "Accepted"


async def test_pending_mode_registers_unknown_as_pending_until_accepted(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(unknown_chargers="pending", boot_retry_interval=45)
    async with RawCharger(edge.url, "NEW1") as charger:
        boot = await charger.boot()
        assert boot["status"] == "Pending" and boot["interval"] == 45
        assert edge.query("SELECT registration FROM chargers")[0][0] == "pending"
        # An operator accepts it (ocpp-edge chargers accept NEW1); its next boot is Accepted.
        await edge.execute("UPDATE chargers SET registration = 'accepted' WHERE id = 'NEW1'")
        boot = await charger.boot()
        assert boot["status"] == "Accepted"
        assert boot["interval"] == edge.settings.ocpp.heartbeat_interval


async def test_rejected_charger_gets_rejected_boot_and_security_errors(edge: RunningEdge) -> None:
    await edge.execute(
        "INSERT INTO chargers (id, registration, created_at) VALUES ('BAD', 'rejected', 'x')"
    )
    async with RawCharger(edge.url, "BAD") as charger:
        assert (await charger.boot())["status"] == "Rejected"
        reply = await charger.call("Heartbeat", {})
        assert reply[0] == 4 and reply[2] == "SecurityError"
