"""Every CSMS-initiated command, round-tripped over real websockets against the
project's simulated charger, with its outcome and state stored."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call as ocpp_call
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from edge.clock import format_utc
from edge.ocpp.commands import (
    CSMS_INITIATED,
    ChargerOffline,
    ChargerRefused,
    ChargerTimeout,
    InvalidArguments,
    UnknownCharger,
    send_command,
)
from edge.ocpp.library import set_handler
from edge.simulator import SimulatedCharger, SimulatedChargerConfig, make_csr
from edge.store.commands import add_command
from edge.store.database import open_database
from tests.conftest import RunningEdge, StartEdge
from tests.waiting import eventually

SOON = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def charger(edge: RunningEdge) -> AsyncIterator[SimulatedCharger]:
    async with connect(f"{edge.url}/SIM1", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        simulated = SimulatedCharger("SIM1", connection, SimulatedChargerConfig(connectors=2))
        listener = asyncio.create_task(simulated.start())
        await simulated.boot()
        for number in (1, 2):
            await simulated.send_status(number, "Available")
        yield simulated
        listener.cancel()


async def certificate_request_settles(edge: RunningEdge) -> str:
    async with asyncio.timeout(5):
        while True:
            rows = edge.query("SELECT status FROM certificate_requests")
            if rows and rows[0][0] not in ("accepted", "received"):
                return str(rows[0][0])
            await asyncio.sleep(0.02)


def test_all_twenty_six_commands_are_known() -> None:
    assert len(CSMS_INITIATED) == 26 == len(set(CSMS_INITIATED))


def self_signed_pem(common_name: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


async def test_every_command_round_trips(edge: RunningEdge, charger: SimulatedCharger) -> None:
    async def send(action: str, **arguments: Any) -> dict[str, Any]:
        result = await send_command(edge.context, "SIM1", action, arguments, answer_within=10)
        done.add(action)
        return result.response

    done: set[str] = set()
    profile = {
        "chargingProfileId": 7,
        "stackLevel": 1,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7400.0}],
        },
    }
    assert (await send("GetConfiguration"))["configurationKey"]
    assert await send("ChangeConfiguration", key="HeartbeatInterval", value="60") == {
        "status": "Accepted"
    }
    assert await send("ChangeAvailability", connector_id=2, type="Inoperative") == {
        "status": "Accepted"
    }
    assert await send("ClearCache") == {"status": "Accepted"}
    assert await send("DataTransfer", vendor_id="ocpp-edge", message_id="echo", data="hi") == {
        "status": "Accepted",
        "data": "hi",
    }
    assert await send("SetChargingProfile", connector_id=1, cs_charging_profiles=profile) == {
        "status": "Accepted"
    }
    composite = await send("GetCompositeSchedule", connector_id=1, duration=3600)
    assert composite["status"] == "Accepted"
    assert composite["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 7400.0
    assert await send("ClearChargingProfile", id=7) == {"status": "Accepted"}
    assert await send("GetLocalListVersion") == {"listVersion": 0}
    assert await send("SendLocalList", update_type="Full") == {"status": "Accepted"}
    assert await send("ReserveNow", connector_id=1, expiry_date=SOON, id_tag="RES1") == {
        "status": "Accepted"
    }
    reservation_id = edge.query("SELECT id FROM reservations")[0][0]
    assert await send("CancelReservation", reservation_id=reservation_id) == {"status": "Accepted"}
    assert await send("RemoteStartTransaction", id_tag="CARD1", connector_id=1) == {
        "status": "Accepted"
    }
    transaction_id = await asyncio.wait_for(charger.started_transactions.get(), timeout=5)
    assert await send("RemoteStopTransaction", transaction_id=transaction_id) == {
        "status": "Accepted"
    }
    assert await send("TriggerMessage", requested_message="Heartbeat") == {"status": "Accepted"}
    assert await send("UnlockConnector", connector_id=1) == {"status": "Unlocked"}
    assert await send("Reset", type="Soft") == {"status": "Accepted"}
    assert (
        await send("UpdateFirmware", location="http://127.0.0.1:9/fw.bin", retrieve_date=SOON) == {}
    )
    assert (await send("GetDiagnostics", location="http://127.0.0.1:9/upload"))["fileName"]
    # Security whitepaper
    assert await send("ExtendedTriggerMessage", requested_message="SignChargePointCertificate") == {
        "status": "Accepted"
    }
    pem = self_signed_pem("Site CA")
    assert await send(
        "InstallCertificate", certificate_type="CentralSystemRootCertificate", certificate=pem
    ) == {"status": "Accepted"}
    installed = await send(
        "GetInstalledCertificateIds", certificate_type="CentralSystemRootCertificate"
    )
    assert installed["status"] == "Accepted" and len(installed["certificateHashData"]) == 1
    hash_data = installed["certificateHashData"][0]
    assert await send("DeleteCertificate", certificate_hash_data=hash_data) == {
        "status": "Accepted"
    }
    assert await send("CertificateSigned", certificate_chain=self_signed_pem("SIM1")) == {
        "status": "Accepted"
    }
    assert await send(
        "GetLog",
        log={"remoteLocation": "http://127.0.0.1:9/logs"},
        log_type="SecurityLog",
        request_id=3,
    ) == {"status": "Accepted", "filename": "SIM1-securitylog-3.log"}
    signed = {
        "location": "http://127.0.0.1:9/fw.bin",
        "retrieveDateTime": SOON,
        "signingCertificate": pem,
        "signature": "c2ln",
    }
    assert await send("SignedUpdateFirmware", request_id=4, firmware=signed) == {
        "status": "Accepted"
    }
    assert done == set(CSMS_INITIATED)

    # The ExtendedTriggerMessage made the charger send a CSR; the edge signed it and
    # delivered the certificate with a CertificateSigned of its own.
    await certificate_request_settles(edge)
    rows = edge.query("SELECT action, outcome, request, response FROM commands ORDER BY id")
    assert len(rows) == 27 and {row["outcome"] for row in rows} == {"answered"}
    assert [row["action"] for row in rows].count("CertificateSigned") == 2
    assert json.loads(rows[1]["request"]) == {"key": "HeartbeatInterval", "value": "60"}
    # State a central system keeps from the answers:
    config = {
        r["key"]: r["value"] for r in edge.query("SELECT key, value FROM charger_configuration")
    }
    assert config["HeartbeatInterval"] == "60" and config["NumberOfConnectors"] == "2"
    availability = edge.query("SELECT requested, answer FROM availability_requests")[0]
    assert tuple(availability) == ("Inoperative", "Accepted")
    assert edge.query("SELECT status FROM reservations")[0][0] == "cancelled"
    assert edge.query("SELECT count(*) FROM charging_profiles")[0][0] == 0
    assert edge.query("SELECT count(*) FROM installed_certificates")[0][0] == 0


async def test_command_outcomes_other_than_an_answer(
    edge: RunningEdge, charger: SimulatedCharger
) -> None:
    with pytest.raises(UnknownCharger):
        await send_command(edge.context, "NOBODY", "Reset", {"type": "Soft"})
    with pytest.raises(InvalidArguments, match="type"):
        await send_command(edge.context, "SIM1", "Reset", {"type": "Sideways"})
    with pytest.raises(InvalidArguments, match="not a command"):
        await send_command(edge.context, "SIM1", "BootNotification", {})
    await edge.execute("INSERT INTO chargers (id, created_at) VALUES ('OFF1', 'x')")
    with pytest.raises(ChargerOffline):
        await send_command(edge.context, "OFF1", "Reset", {"type": "Soft"})

    # A charger that answers with a CALLERROR, and one that does not answer at all.
    set_handler(charger, "ClearCache", None)
    with pytest.raises(ChargerRefused) as refused:
        await send_command(edge.context, "SIM1", "ClearCache", {})
    assert refused.value.code == "NotImplemented"

    async def never(**_: Any) -> None:
        await asyncio.sleep(3600)

    set_handler(charger, "GetLocalListVersion", never)
    with pytest.raises(ChargerTimeout):
        await send_command(edge.context, "SIM1", "GetLocalListVersion", {}, answer_within=0.3)
    outcomes = [
        tuple(r)
        for r in edge.query("SELECT charger_id, outcome, error_code FROM commands ORDER BY id")
    ]
    assert outcomes == [
        ("OFF1", "offline", None),
        ("SIM1", "callerror", "NotImplemented"),
        ("SIM1", "timeout", None),
    ]


async def test_differential_local_list_after_card_changes(
    edge: RunningEdge, charger: SimulatedCharger
) -> None:
    await edge.execute(
        "INSERT INTO id_tags (id_tag, created_at, updated_at) VALUES ('A1', 'x', 'x')"
    )
    await edge.execute(
        "INSERT INTO id_tags (id_tag, created_at, updated_at) VALUES ('B2', 'x', 'x')"
    )
    await send_command(edge.context, "SIM1", "SendLocalList", {})
    assert charger.local_list == {"A1": {"status": "Accepted"}, "B2": {"status": "Accepted"}}
    first = charger.local_list_version
    await edge.execute("UPDATE id_tags SET status = 'Blocked' WHERE id_tag = 'B2'")
    await send_command(edge.context, "SIM1", "SendLocalList", {})
    request = json.loads(edge.query("SELECT request FROM commands ORDER BY id DESC LIMIT 1")[0][0])
    assert request["updateType"] == "Differential"
    assert request["localAuthorizationList"] == [
        {"idTag": "B2", "idTagInfo": {"status": "Blocked"}}
    ]
    assert charger.local_list["B2"] == {"status": "Blocked"} and charger.local_list_version > first
    assert edge.query("SELECT version FROM local_lists")[0][0] == charger.local_list_version


async def test_reservation_is_consumed_by_start_transaction(
    edge: RunningEdge, charger: SimulatedCharger
) -> None:
    await edge.execute(
        "INSERT INTO id_tags (id_tag, created_at, updated_at) VALUES ('RES1', 'x', 'x')"
    )
    result = await send_command(
        edge.context,
        "SIM1",
        "ReserveNow",
        {"connector_id": 0, "expiry_date": SOON, "id_tag": "RES1"},
    )
    assert result.response == {"status": "Accepted"}
    reservation_id = edge.query("SELECT id FROM reservations")[0][0]
    response = await charger.call(
        ocpp_call.StartTransaction(
            connector_id=1,
            id_tag="RES1",
            meter_start=0,
            timestamp=SOON,
            reservation_id=reservation_id,
        ),
        suppress=False,
    )
    row = edge.query("SELECT status, transaction_id FROM reservations")[0]
    assert tuple(row) == ("used", response.transaction_id)


async def test_certificate_request_is_signed_by_the_site_ca_and_delivered(
    start_edge: StartEdge,
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from ocpp.v16 import call

    edge = await start_edge()
    async with connect(f"{edge.url}/SIM2", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        simulated = SimulatedCharger("SIM2", connection, SimulatedChargerConfig())
        listener = asyncio.create_task(simulated.start())
        answer = await simulated.call(call.SignCertificate(csr=make_csr("SIM2")), suppress=False)
        assert answer.status == "Accepted"
        assert await certificate_request_settles(edge) == "installed"
        # A request in another charger's name is refused outright.
        impostor = await simulated.call(call.SignCertificate(csr=make_csr("SIM3")), suppress=False)
        assert impostor.status == "Rejected"
        listener.cancel()
    chain = simulated.certificates["ChargePointCertificate"][0]
    leaf, ca = x509.load_pem_x509_certificates(chain.encode())
    assert leaf.subject.rfc4514_string() == "CN=SIM2"
    assert leaf.issuer == ca.subject
    authority_key = ca.public_key()
    assert isinstance(authority_key, ec.EllipticCurvePublicKey)
    assert leaf.signature_hash_algorithm is not None
    # Raises if the site CA did not sign it.
    authority_key.verify(
        leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
    )
    rows = edge.query("SELECT status, reason FROM certificate_requests ORDER BY id")
    assert rows[0]["status"] == "installed"
    assert rows[1]["status"] == "rejected" and "not the charger id" in rows[1]["reason"]


async def test_availability_scheduled_during_a_transaction_applies_at_its_end(
    edge: RunningEdge, charger: SimulatedCharger
) -> None:
    await charger.start_transaction(1, "CARD1")
    result = await send_command(
        edge.context, "SIM1", "ChangeAvailability", {"connector_id": 1, "type": "Inoperative"}
    )
    assert result.response == {"status": "Scheduled"}
    assert edge.query("SELECT answer FROM availability_requests")[0][0] == "Scheduled"
    await charger.stop_transaction(1)
    assert edge.query("SELECT requested, answer FROM availability_requests")[0][:] == (
        "Inoperative",
        "Accepted",
    )


def test_expired_reservations_are_marked(tmp_path: Any) -> None:
    from edge.store.database import open_database
    from edge.store.reservations import expire_reservations

    db = open_database(tmp_path / "edge.db")
    db.conn.execute("INSERT INTO chargers (id, created_at) VALUES ('C', 'x')")
    for expiry in ("2026-01-01T00:00:00.000Z", "2099-01-01T00:00:00.000Z"):
        db.conn.execute(
            "INSERT INTO reservations (charger_id, connector_id, id_tag, expiry_date, status, created_at, updated_at) "
            "VALUES ('C', 1, 'T', ?, 'active', 'x', 'x')",
            (expiry,),
        )
    assert expire_reservations(db, "2026-06-01T00:00:00.000Z") == 1
    assert [r[0] for r in db.conn.execute("SELECT status FROM reservations ORDER BY id")] == [
        "expired",
        "active",
    ]


async def test_features_see_the_chargers_through_the_site_context(
    start_edge: StartEdge,
) -> None:
    """`context.chargers` (what every feature is given instead of the server): who is
    connected and accepted, and a call to one of them; a charger not connected is a
    ConnectionLost, never a KeyError."""
    from edge.ocpp.session import ConnectionLost

    edge = await start_edge(unknown_chargers="pending")
    chargers = edge.context.chargers
    async with (
        connect(f"{edge.url}/SIM1", subprotocols=[Subprotocol("ocpp1.6")]) as accepted,
        connect(f"{edge.url}/NEW1", subprotocols=[Subprotocol("ocpp1.6")]) as pending,
    ):
        await edge.execute("UPDATE chargers SET registration = 'accepted' WHERE id = 'SIM1'")
        sim = SimulatedCharger("SIM1", accepted, SimulatedChargerConfig())
        newcomer = SimulatedCharger("NEW1", pending, SimulatedChargerConfig())
        listeners = [asyncio.create_task(sim.start()), asyncio.create_task(newcomer.start())]
        assert (await sim.boot()).status == "Accepted"
        assert (await newcomer.boot()).status == "Pending"
        assert sorted(chargers.connected_ids()) == ["NEW1", "SIM1"]
        assert chargers.is_connected("NEW1") and not chargers.is_accepted("NEW1")
        assert chargers.is_accepted("SIM1") and not chargers.is_connected("GONE")
        answer = await chargers.send("SIM1", "GetLocalListVersion", {})
        assert answer == {"listVersion": sim.local_list_version}
        with pytest.raises(ConnectionLost):
            await chargers.send("GONE", "GetLocalListVersion", {})
        for listener in listeners:
            listener.cancel()


async def test_commands_older_than_the_history_kept_are_deleted_at_start(
    tmp_path: Path, start_edge: StartEdge
) -> None:
    """`[store] command_history_days` (90 by default): every local-list part a charger
    was sent is a command, so a site left running for years keeps only that much."""
    store = open_database(tmp_path / "edge.db")
    store.conn.execute("INSERT INTO chargers (id, created_at) VALUES ('CP1', 'x')")
    long_ago = format_utc(datetime.now(UTC) - timedelta(days=91))
    yesterday = format_utc(datetime.now(UTC) - timedelta(days=1))
    request = {"type": "Soft"}
    add_command(store, "CP1", "Reset", request, "answered", long_ago, long_ago)
    kept = add_command(store, "CP1", "Reset", request, "answered", yesterday, yesterday)
    store.conn.close()

    edge = await start_edge()

    def command_ids() -> list[int]:
        with closing(sqlite3.connect(edge.db_path)) as connection:
            return [row[0] for row in connection.execute("SELECT id FROM commands")]

    await eventually(lambda: command_ids() == [kept])
