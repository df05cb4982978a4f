"""Each charger-initiated OCPP 1.6 action, answered as a real CSMS and stored."""

from __future__ import annotations

from tests.conftest import RunningEdge
from tests.ocpp_client import RawCharger

T0 = "2026-03-01T10:00:00Z"


async def add_card(edge: RunningEdge, id_tag: str, status: str = "Accepted", **extra: str) -> None:
    await edge.execute(
        "INSERT INTO id_tags (id_tag, status, expiry_date, parent_id_tag, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, 'x', 'x')",
        (id_tag, status, extra.get("expiry"), extra.get("parent")),
    )


def start(connector: int, id_tag: str, meter: int = 1000, at: str = T0) -> dict[str, object]:
    return {"connectorId": connector, "idTag": id_tag, "meterStart": meter, "timestamp": at}


async def test_boot_notification_stores_identity_and_returns_interval(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        result = await charger.ok(
            "BootNotification",
            {
                "chargePointVendor": "Acme",
                "chargePointModel": "Wallbox 22",
                "chargePointSerialNumber": "S-1",
                "firmwareVersion": "4.2.0",
                "iccid": "8931",
                "meterType": "EM340",
            },
        )
    assert result["status"] == "Accepted"
    assert result["interval"] == edge.settings.ocpp.heartbeat_interval
    assert result["currentTime"].endswith("Z")
    row = edge.query("SELECT * FROM chargers WHERE id = 'CP1'")[0]
    assert (row["vendor"], row["model"], row["serial_number"], row["firmware_version"]) == (
        "Acme",
        "Wallbox 22",
        "S-1",
        "4.2.0",
    )
    assert (row["iccid"], row["meter_type"]) == ("8931", "EM340")


async def test_status_notification_keeps_current_state_and_history(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        await charger.ok(
            "StatusNotification", {"connectorId": 0, "errorCode": "NoError", "status": "Available"}
        )
        await charger.ok(
            "StatusNotification",
            {
                "connectorId": 1,
                "errorCode": "NoError",
                "status": "Preparing",
                "timestamp": "2026-03-01T10:00:00+01:00",
            },
        )
        await charger.ok(
            "StatusNotification",
            {
                "connectorId": 1,
                "errorCode": "GroundFailure",
                "status": "Faulted",
                "info": "RCD tripped",
                "vendorErrorCode": "E42",
            },
        )
    current = {r["connector_id"]: r for r in edge.query("SELECT * FROM connectors")}
    assert current[0]["status"] == "Available"
    assert (
        current[1]["status"],
        current[1]["error_code"],
        current[1]["info"],
        current[1]["vendor_error_code"],
    ) == (
        "Faulted",
        "GroundFailure",
        "RCD tripped",
        "E42",
    )
    history = edge.query(
        "SELECT status, charger_timestamp FROM status_history WHERE connector_id = 1 ORDER BY id"
    )
    assert [r["status"] for r in history] == ["Preparing", "Faulted"]
    assert history[0]["charger_timestamp"] == "2026-03-01T09:00:00.000Z"


async def test_authorize_answers_from_the_card_table(edge: RunningEdge) -> None:
    await add_card(edge, "GOOD", parent="FLEET1", expiry="2099-01-01T00:00:00.000Z")
    await add_card(edge, "BLOCKED", "Blocked")
    await add_card(edge, "OLD", "Accepted", expiry="2020-01-01T00:00:00.000Z")
    async with RawCharger(edge.url, "CP1") as charger:
        good = (await charger.ok("Authorize", {"idTag": "good"}))["idTagInfo"]
        assert good == {
            "status": "Accepted",
            "parentIdTag": "FLEET1",
            "expiryDate": "2099-01-01T00:00:00.000Z",
        }
        assert (await charger.ok("Authorize", {"idTag": "BLOCKED"}))["idTagInfo"][
            "status"
        ] == "Blocked"
        assert (await charger.ok("Authorize", {"idTag": "OLD"}))["idTagInfo"]["status"] == "Expired"
        assert (await charger.ok("Authorize", {"idTag": "NOBODY"}))["idTagInfo"][
            "status"
        ] == "Invalid"
        await charger.ok("StartTransaction", start(1, "GOOD"))
    async with RawCharger(edge.url, "CP2") as other:
        # The same card cannot charge at a second charger at once.
        assert (await other.ok("Authorize", {"idTag": "GOOD"}))["idTagInfo"][
            "status"
        ] == "ConcurrentTx"


async def test_start_transaction_id_is_durable_before_the_reply(edge: RunningEdge) -> None:
    await add_card(edge, "CARD1")
    async with RawCharger(edge.url, "CP1") as charger:
        result = await charger.ok("StartTransaction", start(1, "CARD1", meter=1500))
        # Read by another connection right after the reply: it is already committed.
        rows = edge.query("SELECT * FROM transactions WHERE id = ?", (result["transactionId"],))
    assert result["idTagInfo"]["status"] == "Accepted"
    assert rows[0]["meter_start_wh"] == 1500 and rows[0]["started_at"] == "2026-03-01T10:00:00.000Z"
    assert rows[0]["start_received_at"] != rows[0]["started_at"]


async def test_start_transaction_for_unknown_card_is_recorded_as_invalid(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        result = await charger.ok("StartTransaction", start(1, "STRANGER"))
    assert result["idTagInfo"]["status"] == "Invalid"
    assert edge.query("SELECT id_tag_status FROM transactions")[0][0] == "Invalid"


async def test_repeated_and_concurrent_starts_on_one_connector(edge: RunningEdge) -> None:
    await add_card(edge, "A")
    await add_card(edge, "B")
    async with RawCharger(edge.url, "CP1") as charger:
        first = await charger.ok("StartTransaction", start(1, "A"))
        # The charger did not get our answer and sends the very same start again.
        again = await charger.ok("StartTransaction", start(1, "A"))
        assert again["transactionId"] == first["transactionId"]
        # A different start on the same connector: the old one was lost by the charger.
        other = await charger.ok(
            "StartTransaction", start(1, "B", meter=2000, at="2026-03-01T11:00:00Z")
        )
        assert other["transactionId"] != first["transactionId"]
    rows = edge.query("SELECT id, stopped_at, closed_by_edge FROM transactions ORDER BY id")
    assert len(rows) == 2
    assert rows[0]["closed_by_edge"] == 1 and rows[0]["stopped_at"] == "2026-03-01T11:00:00.000Z"
    assert rows[1]["stopped_at"] is None


async def test_meter_values_are_stored_and_normalised(edge: RunningEdge) -> None:
    await add_card(edge, "CARD1")
    async with RawCharger(edge.url, "CP1") as charger:
        transaction_id = (await charger.ok("StartTransaction", start(1, "CARD1")))["transactionId"]
        await charger.ok(
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": transaction_id,
                "meterValue": [
                    {
                        "timestamp": "2026-03-01T10:05:00Z",
                        "sampledValue": [
                            {
                                "value": "2.345",
                                "unit": "kWh",
                                "measurand": "Energy.Active.Import.Register",
                                "context": "Sample.Periodic",
                            },
                            {"value": "7.2", "unit": "kW", "measurand": "Power.Active.Import"},
                            {
                                "value": "16.1",
                                "unit": "A",
                                "measurand": "Current.Import",
                                "phase": "L1",
                            },
                            {"value": "2400"},
                        ],
                    }
                ],
            },
        )
    rows = edge.query("SELECT * FROM meter_values ORDER BY id")
    assert [(r["measurand"], r["unit"], r["normalized"], r["wh"], r["phase"]) for r in rows] == [
        ("Energy.Active.Import.Register", "kWh", 2345.0, 2345, None),
        ("Power.Active.Import", "kW", 7200.0, None, None),
        ("Current.Import", "A", 16.1, None, "L1"),
        ("Energy.Active.Import.Register", "Wh", 2400.0, 2400, None),
    ]
    assert all(r["transaction_id"] == transaction_id for r in rows)
    assert (
        rows[0]["context"] == "Sample.Periodic"
        and rows[0]["charger_timestamp"] == "2026-03-01T10:05:00.000Z"
    )
    transaction = edge.query("SELECT last_meter_wh FROM transactions")[0]
    assert transaction["last_meter_wh"] == 2345


async def test_meter_values_for_unknown_transaction_are_kept(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        await charger.ok(
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": 999,
                "meterValue": [{"timestamp": T0, "sampledValue": [{"value": "5"}]}],
            },
        )
    row = edge.query("SELECT transaction_id, unknown_transaction_id, wh FROM meter_values")[0]
    assert (row["transaction_id"], row["unknown_transaction_id"], row["wh"]) == (None, 999, 5)


async def test_stop_transaction_is_idempotent_and_stores_transaction_data(
    edge: RunningEdge,
) -> None:
    await add_card(edge, "CARD1")
    async with RawCharger(edge.url, "CP1") as charger:
        transaction_id = (await charger.ok("StartTransaction", start(1, "CARD1", meter=1000)))[
            "transactionId"
        ]
        stop = {
            "transactionId": transaction_id,
            "meterStop": 8500,
            "timestamp": "2026-03-01T11:00:00Z",
            "idTag": "CARD1",
            "reason": "EVDisconnected",
            "transactionData": [
                {
                    "timestamp": "2026-03-01T11:00:00Z",
                    "sampledValue": [{"value": "8500", "context": "Transaction.End"}],
                }
            ],
        }
        first = await charger.ok("StopTransaction", stop)
        again = await charger.ok("StopTransaction", {**stop, "meterStop": 9999})
    assert first["idTagInfo"]["status"] == "Accepted" and again == first
    row = edge.query("SELECT * FROM transactions")[0]
    assert (row["meter_stop_wh"], row["stop_reason"], row["stopped_at"]) == (
        8500,
        "EVDisconnected",
        "2026-03-01T11:00:00.000Z",
    )
    data = edge.query(
        "SELECT context, wh FROM meter_values WHERE transaction_id = ?", (transaction_id,)
    )
    assert [(r["context"], r["wh"]) for r in data] == [("Transaction.End", 8500)]


async def test_stop_for_unknown_transaction_is_accepted_and_recorded(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        result = await charger.ok(
            "StopTransaction",
            {
                "transactionId": 4242,
                "meterStop": 10,
                "timestamp": T0,
                "transactionData": [{"timestamp": T0, "sampledValue": [{"value": "10"}]}],
            },
        )
    assert result == {}
    row = edge.query("SELECT * FROM unmatched_stops")[0]
    assert (row["transaction_id"], row["meter_stop_wh"]) == (4242, 10)
    assert '"sampledValue"' in row["transaction_data"]
    assert edge.query("SELECT count(*) FROM transactions")[0][0] == 0


async def test_data_transfer_is_stored_and_answered_by_vendor_handler(edge: RunningEdge) -> None:
    edge.server.context.data_transfer.register(
        "com.acme", lambda message_id, data: ("Accepted", f"echo:{data}")
    )
    async with RawCharger(edge.url, "CP1") as charger:
        unknown = await charger.ok("DataTransfer", {"vendorId": "org.other", "data": "x"})
        known = await charger.ok(
            "DataTransfer", {"vendorId": "com.acme", "messageId": "ping", "data": "42"}
        )
    assert unknown == {"status": "UnknownVendorId"}
    assert known == {"status": "Accepted", "data": "echo:42"}
    rows = edge.query(
        "SELECT vendor_id, message_id, data, response_status FROM data_transfers ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        ("org.other", None, "x", "UnknownVendorId"),
        ("com.acme", "ping", "42", "Accepted"),
    ]


async def test_firmware_diagnostics_log_and_signed_firmware_status(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        assert await charger.ok("FirmwareStatusNotification", {"status": "Downloading"}) == {}
        assert await charger.ok("DiagnosticsStatusNotification", {"status": "Uploaded"}) == {}
        assert (
            await charger.ok(
                "SignedFirmwareStatusNotification", {"status": "SignatureVerified", "requestId": 7}
            )
            == {}
        )
        assert (
            await charger.ok("LogStatusNotification", {"status": "Uploading", "requestId": 8}) == {}
        )
    rows = edge.query("SELECT kind, status, request_id FROM charger_job_status ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("firmware", "Downloading", None),
        ("diagnostics", "Uploaded", None),
        ("signed_firmware", "SignatureVerified", 7),
        ("log", "Uploading", 8),
    ]


async def test_security_event_and_sign_certificate_are_stored(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "CP1") as charger:
        assert (
            await charger.ok(
                "SecurityEventNotification",
                {"type": "TamperDetectionActivated", "timestamp": T0, "techInfo": "lid open"},
            )
            == {}
        )
        assert await charger.ok(
            "SignCertificate", {"csr": "-----BEGIN CERTIFICATE REQUEST-----"}
        ) == {"status": "Rejected"}
    event = edge.query("SELECT type, tech_info, charger_timestamp FROM security_events")[0]
    assert tuple(event) == ("TamperDetectionActivated", "lid open", "2026-03-01T10:00:00.000Z")
    request = edge.query("SELECT csr, status, reason FROM certificate_requests")[0]
    assert request["csr"].startswith("-----BEGIN") and request["status"] == "rejected"
    assert "not a PEM certificate request" in request["reason"]
