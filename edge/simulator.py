"""A simulated OCPP 1.6J charger, built on the `ocpp` library's ChargePoint.

It boots, reports connector status, heartbeats, authorizes a card, runs
transactions with meter values and answers the central system's commands the way
a charger does. The demo site, the tests and the benchmark drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import hashlib
import io
import logging
import random
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import (
    Action,
    AvailabilityStatus,
    CancelReservationStatus,
    CertificateSignedStatus,
    CertificateStatus,
    ChargePointStatus,
    ChargingProfileStatus,
    ClearCacheStatus,
    ClearChargingProfileStatus,
    ConfigurationStatus,
    DataTransferStatus,
    DeleteCertificateStatus,
    GetCompositeScheduleStatus,
    GetInstalledCertificateStatus,
    LogStatus,
    RemoteStartStopStatus,
    ReservationStatus,
    ResetStatus,
    TriggerMessageStatus,
    UnlockStatus,
    UpdateFirmwareStatus,
    UpdateStatus,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from contract.runtime import run_until_stopped, until_stopped
from edge.clock import utc_now_text
from edge.ocpp.library import on
from edge.ocpp.payloads import to_wire
from edge.ocpp.schemas import validate_request, validate_response

log = logging.getLogger(__name__)


@dataclass
class Connector:
    status: str = ChargePointStatus.available
    transaction_id: int | None = None
    id_tag: str | None = None
    meter_wh: int = 0
    power_w: int = 7200


ALL_FEATURE_PROFILES = (
    "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger"
)


@dataclass
class SimulatedChargerConfig:
    connectors: int = 2
    vendor: str = "ocpp-edge"
    model: str = "Simulated AC 22kW"
    firmware_version: str = "sim-1.0"
    meter_interval: float = 10.0
    # The local list as OCPP 1.6 §9.1 has a charger describe it, reported by
    # GetConfiguration and enforced: a SendLocalList longer than send_local_list_max_length,
    # or one that would leave more than local_list_max_length entries, is answered Failed;
    # without LocalAuthListManagement among the profiles, NotSupported.
    local_list_max_length: int = 10_000
    send_local_list_max_length: int = 1000
    local_list_enabled: bool = True
    feature_profiles: str = ALL_FEATURE_PROFILES
    # What GetConfiguration reports instead of the true values (a charger may answer
    # anything); None: the key is unknown to it.
    reported_configuration: dict[str, str | None] = field(default_factory=dict)


class SimulatedCharger(ChargePoint):  # type: ignore[misc]
    def __init__(
        self, charger_id: str, connection: ClientConnection, config: SimulatedChargerConfig
    ) -> None:
        super().__init__(charger_id, connection, response_timeout=30)
        # Ours, not the library's private attribute of the same connection.
        self.websocket = connection
        self.config = config
        self.connectors = {number: Connector() for number in range(1, config.connectors + 1)}
        self.configuration: dict[str, str] = {
            "HeartbeatInterval": "300",
            "MeterValueSampleInterval": str(int(config.meter_interval)),
            "NumberOfConnectors": str(config.connectors),
            "LocalAuthListEnabled": "true" if config.local_list_enabled else "false",
            "LocalAuthListMaxLength": str(config.local_list_max_length),
            "SendLocalListMaxLength": str(config.send_local_list_max_length),
            "SupportedFeatureProfiles": config.feature_profiles,
        }
        for key, value in config.reported_configuration.items():
            if value is None:
                self.configuration.pop(key, None)
            else:
                self.configuration[key] = value
        self.heartbeat_interval = 300
        self.reservations: dict[int, tuple[int, str]] = {}
        self.local_list_version = 0
        self.local_list: dict[str, dict[str, Any]] = {}
        # Every SendLocalList received: (updateType, listVersion, entries, answer).
        self.local_list_updates: list[tuple[str, int, int, str]] = []
        self.charging_profiles: dict[int, tuple[int, dict[str, Any]]] = {}
        self.certificates: dict[str, list[str]] = {}
        self.firmware: bytes | None = None
        # Transaction ids as this charger starts them (RemoteStart is answered first).
        self.started_transactions: asyncio.Queue[int] = asyncio.Queue()
        self._background: set[asyncio.Task[Any]] = set()

    async def call(
        self,
        payload: Any,
        suppress: bool = True,
        unique_id: str | None = None,
        skip_schema_validation: bool = False,
    ) -> Any:
        """The library's call(), its request and answer checked with the edge's compiled
        schemas instead of the library's interpreted validator (the demo runs these
        chargers inside the daemon, the benches by hundreds)."""
        action = type(payload).__name__
        if not skip_schema_validation:
            validate_request(action, to_wire(payload))
        result = await super().call(
            payload, suppress=suppress, unique_id=unique_id, skip_schema_validation=True
        )
        if result is not None and not skip_schema_validation:
            validate_response(action, to_wire(result))
        return result

    # Charger-initiated -------------------------------------------------------

    async def boot(self) -> call_result.BootNotification:
        response: call_result.BootNotification = await self.call(
            call.BootNotification(
                charge_point_vendor=self.config.vendor,
                charge_point_model=self.config.model,
                firmware_version=self.config.firmware_version,
                charge_point_serial_number=f"SN-{self.id}",
            ),
            suppress=False,
        )
        self.heartbeat_interval = response.interval
        return response

    async def send_status(
        self, connector_id: int, status: str, error_code: str = "NoError"
    ) -> None:
        if connector_id:
            self.connectors[connector_id].status = status
        await self.call(
            call.StatusNotification(
                connector_id=connector_id,
                error_code=error_code,
                status=status,
                timestamp=utc_now_text(),
            ),
            suppress=False,
        )

    async def heartbeat(self) -> call_result.Heartbeat:
        return await self.call(call.Heartbeat(), suppress=False)

    async def authorize(self, id_tag: str) -> str:
        response = await self.call(call.Authorize(id_tag=id_tag), suppress=False)
        return str(response.id_tag_info["status"])

    async def start_transaction(self, connector_id: int, id_tag: str) -> tuple[int, str]:
        connector = self.connectors[connector_id]
        await self.send_status(connector_id, ChargePointStatus.preparing)
        response = await self.call(
            call.StartTransaction(
                connector_id=connector_id,
                id_tag=id_tag,
                meter_start=connector.meter_wh,
                timestamp=utc_now_text(),
            ),
            suppress=False,
        )
        status = str(response.id_tag_info["status"])
        connector.transaction_id = response.transaction_id
        connector.id_tag = id_tag
        self.started_transactions.put_nowait(response.transaction_id)
        await self.send_status(connector_id, ChargePointStatus.charging)
        return response.transaction_id, status

    async def send_meter_values(self, connector_id: int, seconds: float) -> None:
        connector = self.connectors[connector_id]
        connector.meter_wh += round(connector.power_w * seconds / 3600)
        await self.call(
            call.MeterValues(
                connector_id=connector_id,
                transaction_id=connector.transaction_id,
                meter_value=[
                    {
                        "timestamp": utc_now_text(),
                        "sampledValue": [
                            {
                                "value": str(connector.meter_wh),
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                                "context": "Sample.Periodic",
                            },
                            {
                                "value": f"{connector.power_w / 1000:.1f}",
                                "measurand": "Power.Active.Import",
                                "unit": "kW",
                            },
                        ],
                    }
                ],
            ),
            suppress=False,
        )

    async def stop_transaction(self, connector_id: int, reason: str = "Local") -> None:
        connector = self.connectors[connector_id]
        if connector.transaction_id is None:
            return
        await self.send_status(connector_id, ChargePointStatus.finishing)
        await self.call(
            call.StopTransaction(
                meter_stop=connector.meter_wh,
                timestamp=utc_now_text(),
                transaction_id=connector.transaction_id,
                reason=reason,
                id_tag=connector.id_tag,
            ),
            suppress=False,
        )
        connector.transaction_id = None
        connector.id_tag = None
        await self.send_status(connector_id, ChargePointStatus.available)

    async def run_session(self, connector_id: int, id_tag: str, seconds: float) -> None:
        """Authorize, charge for `seconds` with periodic meter values, stop."""
        if await self.authorize(id_tag) != "Accepted":
            return
        await self.start_transaction(connector_id, id_tag)
        elapsed = 0.0
        while elapsed < seconds:
            step = min(self.config.meter_interval, seconds - elapsed)
            await asyncio.sleep(step)
            elapsed += step
            await self.send_meter_values(connector_id, step)
        await self.stop_transaction(connector_id)

    # Central-system-initiated --------------------------------------------------

    def _later(self, coroutine: Any) -> None:
        # Follow-up messages go after our answer, as a real charger sends them.
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @on(Action.remote_start_transaction)
    async def on_remote_start_transaction(
        self, id_tag: str, connector_id: int | None = None, **_: Any
    ) -> call_result.RemoteStartTransaction:
        number = connector_id or next(
            (n for n, c in self.connectors.items() if c.transaction_id is None), None
        )
        if (
            number is None
            or number not in self.connectors
            or self.connectors[number].transaction_id
        ):
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        self._later(self.start_transaction(number, id_tag))
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

    @on(Action.remote_stop_transaction)
    async def on_remote_stop_transaction(
        self, transaction_id: int
    ) -> call_result.RemoteStopTransaction:
        for number, connector in self.connectors.items():
            if connector.transaction_id == transaction_id:
                self._later(self.stop_transaction(number, reason="Remote"))
                return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.accepted)
        return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.rejected)

    @on(Action.reset)
    async def on_reset(self, type: str) -> call_result.Reset:
        return call_result.Reset(status=ResetStatus.accepted)

    @on(Action.change_availability)
    async def on_change_availability(
        self, connector_id: int, type: str
    ) -> call_result.ChangeAvailability:
        busy = any(c.transaction_id for n, c in self.connectors.items() if connector_id in (0, n))
        status = AvailabilityStatus.scheduled if busy else AvailabilityStatus.accepted
        return call_result.ChangeAvailability(status=status)

    @on(Action.get_configuration)
    async def on_get_configuration(
        self, key: list[str] | None = None
    ) -> call_result.GetConfiguration:
        wanted = key or list(self.configuration)
        known = [
            {"key": name, "readonly": False, "value": self.configuration[name]}
            for name in wanted
            if name in self.configuration
        ]
        unknown = [name for name in wanted if name not in self.configuration]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.change_configuration)
    async def on_change_configuration(
        self, key: str, value: str
    ) -> call_result.ChangeConfiguration:
        if key not in self.configuration:
            return call_result.ChangeConfiguration(status=ConfigurationStatus.not_supported)
        self.configuration[key] = value
        return call_result.ChangeConfiguration(status=ConfigurationStatus.accepted)

    @on(Action.trigger_message)
    async def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None
    ) -> call_result.TriggerMessage:
        return call_result.TriggerMessage(status=self._trigger(requested_message, connector_id))

    def _trigger(self, requested_message: str, connector_id: int | None) -> TriggerMessageStatus:
        """Send the requested message soon after the answer (Trigger and ExtendedTrigger)."""
        if requested_message == "SignChargePointCertificate":
            self._later(self.call(call.SignCertificate(csr=make_csr(self.id)), suppress=False))
        elif requested_message == "Heartbeat":
            self._later(self.heartbeat())
        elif requested_message == "StatusNotification":
            for number, connector in self.connectors.items():
                if connector_id in (None, number):
                    self._later(self.send_status(number, connector.status))
        elif requested_message == "BootNotification":
            self._later(self.boot())
        else:
            return TriggerMessageStatus.not_implemented
        return TriggerMessageStatus.accepted

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, connector_id: int) -> call_result.UnlockConnector:
        if connector_id not in self.connectors:
            return call_result.UnlockConnector(status=UnlockStatus.not_supported)
        return call_result.UnlockConnector(status=UnlockStatus.unlocked)

    @on(Action.data_transfer)
    async def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: str | None = None
    ) -> call_result.DataTransfer:
        if vendor_id != self.config.vendor:
            return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)
        if message_id != "echo":
            return call_result.DataTransfer(status=DataTransferStatus.unknown_message_id)
        return call_result.DataTransfer(status=DataTransferStatus.accepted, data=data)

    @on(Action.clear_cache)
    async def on_clear_cache(self) -> call_result.ClearCache:
        return call_result.ClearCache(status=ClearCacheStatus.accepted)

    # Reservation -------------------------------------------------------------------

    @on(Action.reserve_now)
    async def on_reserve_now(
        self,
        connector_id: int,
        expiry_date: str,
        id_tag: str,
        reservation_id: int,
        parent_id_tag: str | None = None,
    ) -> call_result.ReserveNow:
        free = [
            number
            for number, connector in self.connectors.items()
            if connector.transaction_id is None and connector.status == ChargePointStatus.available
        ]
        if connector_id and connector_id not in self.connectors:
            return call_result.ReserveNow(status=ReservationStatus.rejected)
        target = connector_id or (free[0] if free else None)
        if target is None or target not in free:
            return call_result.ReserveNow(status=ReservationStatus.occupied)
        self.reservations[reservation_id] = (target, id_tag)
        self._later(self.send_status(target, ChargePointStatus.reserved))
        return call_result.ReserveNow(status=ReservationStatus.accepted)

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, reservation_id: int) -> call_result.CancelReservation:
        reserved = self.reservations.pop(reservation_id, None)
        if reserved is None:
            return call_result.CancelReservation(status=CancelReservationStatus.rejected)
        self._later(self.send_status(reserved[0], ChargePointStatus.available))
        return call_result.CancelReservation(status=CancelReservationStatus.accepted)

    # Local authorization list -----------------------------------------------------

    @on(Action.get_local_list_version)
    async def on_get_local_list_version(self) -> call_result.GetLocalListVersion:
        return call_result.GetLocalListVersion(list_version=self.local_list_version)

    # The list can be thousands of entries: checked with the edge's compiled schemas
    # rather than the library's interpreted validator, which costs a boot storm seconds.
    @on(Action.send_local_list, skip_schema_validation=True)
    async def on_send_local_list(
        self,
        list_version: int,
        update_type: str,
        local_authorization_list: list[dict[str, Any]] | None = None,
    ) -> call_result.SendLocalList:
        entries = local_authorization_list or []
        validate_request(
            "SendLocalList",
            to_wire(
                {
                    "list_version": list_version,
                    "update_type": update_type,
                    **({"local_authorization_list": entries} if entries else {}),
                }
            ),
        )
        status = self._apply_local_list(list_version, update_type, entries)
        self.local_list_updates.append((update_type, list_version, len(entries), status))
        return call_result.SendLocalList(status=status)

    def _apply_local_list(
        self, list_version: int, update_type: str, entries: list[dict[str, Any]]
    ) -> UpdateStatus:
        profiles = {name.strip() for name in self.config.feature_profiles.split(",")}
        if "LocalAuthListManagement" not in profiles:
            return UpdateStatus.not_supported
        if len(entries) > self.config.send_local_list_max_length:
            return UpdateStatus.failed
        if update_type == "Differential":
            if list_version <= self.local_list_version:
                return UpdateStatus.version_mismatch
            updated = dict(self.local_list)
            for entry in entries:
                if entry.get("id_tag_info") is None:
                    updated.pop(entry["id_tag"], None)
                else:
                    updated[entry["id_tag"]] = entry["id_tag_info"]
        else:
            updated = {entry["id_tag"]: entry["id_tag_info"] for entry in entries}
        if len(updated) > self.config.local_list_max_length:
            return UpdateStatus.failed
        self.local_list, self.local_list_version = updated, list_version
        return UpdateStatus.accepted

    # Smart charging ------------------------------------------------------------------

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any]
    ) -> call_result.SetChargingProfile:
        purpose = cs_charging_profiles["charging_profile_purpose"]
        connector = self.connectors.get(connector_id)
        if connector_id and connector is None:
            return call_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
        if purpose == "TxProfile" and connector is not None and connector.transaction_id is None:
            # A profile for a transaction whose StartTransaction answer is still on its way.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    while connector.status == ChargePointStatus.preparing:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
        wanted = cs_charging_profiles.get("transaction_id")
        if purpose == "TxProfile" and (connector is None or wanted != connector.transaction_id):
            return call_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
        profile_id = cs_charging_profiles["charging_profile_id"]
        self.charging_profiles[profile_id] = (connector_id, cs_charging_profiles)
        return call_result.SetChargingProfile(status=ChargingProfileStatus.accepted)

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
    ) -> call_result.ClearChargingProfile:
        cleared = [
            profile_id
            for profile_id, (connector, profile) in self.charging_profiles.items()
            if id in (None, profile_id)
            and connector_id in (None, connector)
            and charging_profile_purpose in (None, profile["charging_profile_purpose"])
            and stack_level in (None, profile["stack_level"])
        ]
        for profile_id in cleared:
            del self.charging_profiles[profile_id]
        status = (
            ClearChargingProfileStatus.accepted if cleared else ClearChargingProfileStatus.unknown
        )
        return call_result.ClearChargingProfile(status=status)

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None
    ) -> call_result.GetCompositeSchedule:
        if connector_id and connector_id not in self.connectors:
            return call_result.GetCompositeSchedule(status=GetCompositeScheduleStatus.rejected)
        limit = self.composite_limit(connector_id)
        schedule: dict[str, Any] = {
            "duration": duration,
            "charging_rate_unit": charging_rate_unit or "W",
            "charging_schedule_period": [{"start_period": 0, "limit": limit}],
        }
        return call_result.GetCompositeSchedule(
            status=GetCompositeScheduleStatus.accepted,
            connector_id=connector_id,
            schedule_start=utc_now_text(),
            charging_schedule=schedule,
        )

    def composite_limit(self, connector_id: int) -> float:
        """The lowest first-period limit among the profiles that apply to a connector
        (highest stack level per purpose), or the connector's rating with none."""
        best: dict[str, tuple[int, float]] = {}
        for connector, profile in self.charging_profiles.values():
            if connector not in (0, connector_id):
                continue
            purpose, level = profile["charging_profile_purpose"], profile["stack_level"]
            limit = float(profile["charging_schedule"]["charging_schedule_period"][0]["limit"])
            if purpose not in best or level > best[purpose][0]:
                best[purpose] = (level, limit)
        limits = [limit for _, limit in best.values()]
        return min(limits) if limits else 22000.0

    # Firmware, diagnostics and logs --------------------------------------------------

    @on(Action.update_firmware)
    async def on_update_firmware(
        self, location: str, retrieve_date: str, **_: Any
    ) -> call_result.UpdateFirmware:
        self._later(self._install_firmware(location, signed_request_id=None))
        return call_result.UpdateFirmware()

    @on(Action.signed_update_firmware)
    async def on_signed_update_firmware(
        self, request_id: int, firmware: dict[str, Any], **_: Any
    ) -> call_result.SignedUpdateFirmware:
        self._later(self._install_firmware(firmware["location"], signed_request_id=request_id))
        return call_result.SignedUpdateFirmware(status=UpdateFirmwareStatus.accepted)

    async def _install_firmware(self, location: str, signed_request_id: int | None) -> None:
        async def report(status: str) -> None:
            if signed_request_id is None:
                await self.call(call.FirmwareStatusNotification(status=status), suppress=False)
            else:
                await self.call(
                    call.SignedFirmwareStatusNotification(
                        status=status, request_id=signed_request_id
                    ),
                    suppress=False,
                )

        await report("Downloading")
        try:
            self.firmware = await asyncio.to_thread(download, location)
        except OSError as error:
            log.warning("%s: firmware download from %s failed: %s", self.id, location, error)
            await report("DownloadFailed")
            return
        await report("Downloaded")
        if signed_request_id is not None:
            await report("SignatureVerified")
        await report("Installing")
        await report("Installed")

    @on(Action.get_diagnostics)
    async def on_get_diagnostics(self, location: str, **_: Any) -> call_result.GetDiagnostics:
        file_name = f"{self.id}-diagnostics.txt"
        self._later(self._upload_report(location, file_name, request_id=None))
        return call_result.GetDiagnostics(file_name=file_name)

    @on(Action.get_log)
    async def on_get_log(
        self, log: dict[str, Any], log_type: str, request_id: int, **_: Any
    ) -> call_result.GetLog:
        file_name = f"{self.id}-{log_type.lower()}-{request_id}.log"
        self._later(self._upload_report(log["remote_location"], file_name, request_id=request_id))
        return call_result.GetLog(status=LogStatus.accepted, filename=file_name)

    async def _upload_report(self, location: str, file_name: str, request_id: int | None) -> None:
        async def report(status: str) -> None:
            if request_id is None:
                await self.call(call.DiagnosticsStatusNotification(status=status), suppress=False)
            else:
                await self.call(
                    call.LogStatusNotification(status=status, request_id=request_id),
                    suppress=False,
                )

        content = f"{self.id} diagnostics at {utc_now_text()}\n".encode() * 64
        await report("Uploading")
        try:
            await asyncio.to_thread(upload, location, file_name, content)
        except OSError as error:
            log.warning("%s: upload to %s failed: %s", self.id, location, error)
            await report("UploadFailed")
            return
        await report("Uploaded")

    # Security whitepaper --------------------------------------------------------------

    @on(Action.extended_trigger_message)
    async def on_extended_trigger_message(
        self, requested_message: str, connector_id: int | None = None
    ) -> call_result.ExtendedTriggerMessage:
        status = self._trigger(requested_message, connector_id)
        return call_result.ExtendedTriggerMessage(status=status)

    @on(Action.certificate_signed)
    async def on_certificate_signed(self, certificate_chain: str) -> call_result.CertificateSigned:
        if "BEGIN CERTIFICATE" not in certificate_chain:
            return call_result.CertificateSigned(status=CertificateSignedStatus.rejected)
        self.certificates.setdefault("ChargePointCertificate", []).append(certificate_chain)
        return call_result.CertificateSigned(status=CertificateSignedStatus.accepted)

    @on(Action.install_certificate)
    async def on_install_certificate(
        self, certificate_type: str, certificate: str
    ) -> call_result.InstallCertificate:
        try:
            certificate_hash_data(certificate)
        except ValueError:
            return call_result.InstallCertificate(status=CertificateStatus.rejected)
        self.certificates.setdefault(certificate_type, []).append(certificate)
        return call_result.InstallCertificate(status=CertificateStatus.accepted)

    @on(Action.get_installed_certificate_ids)
    async def on_get_installed_certificate_ids(
        self, certificate_type: str
    ) -> call_result.GetInstalledCertificateIds:
        installed = self.certificates.get(certificate_type, [])
        if not installed:
            return call_result.GetInstalledCertificateIds(
                status=GetInstalledCertificateStatus.not_found
            )
        return call_result.GetInstalledCertificateIds(
            status=GetInstalledCertificateStatus.accepted,
            certificate_hash_data=[certificate_hash_data(pem) for pem in installed],
        )

    @on(Action.delete_certificate)
    async def on_delete_certificate(
        self, certificate_hash_data: dict[str, Any]
    ) -> call_result.DeleteCertificate:
        serial = certificate_hash_data["serial_number"]
        for certificates in self.certificates.values():
            for pem in certificates:
                if certificate_hash_data_of(pem)["serial_number"] == serial:
                    certificates.remove(pem)
                    return call_result.DeleteCertificate(status=DeleteCertificateStatus.accepted)
        return call_result.DeleteCertificate(status=DeleteCertificateStatus.not_found)


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        data: bytes = response.read()
        return data


def upload(location: str, file_name: str, content: bytes) -> None:
    """Upload by FTP (ftp://user:password@host:port/dir) or HTTP PUT to location/file_name."""
    parsed = urllib.parse.urlsplit(location)
    if parsed.scheme == "ftp":
        with ftplib.FTP() as ftp:
            ftp.connect(parsed.hostname or "", parsed.port or 21, timeout=30)
            ftp.login(
                urllib.parse.unquote(parsed.username or "anonymous"),
                urllib.parse.unquote(parsed.password or ""),
            )
            if parsed.path.strip("/"):
                ftp.cwd(parsed.path)
            ftp.storbinary(f"STOR {file_name}", io.BytesIO(content))
        return
    request = urllib.request.Request(
        f"{location.rstrip('/')}/{file_name}", data=content, method="PUT"
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def certificate_hash_data_of(pem: str) -> dict[str, str]:
    """OCPP CertificateHashDataType (snake_case) of a PEM certificate."""
    certificate = x509.load_pem_x509_certificate(pem.encode())
    public_key = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "hash_algorithm": "SHA256",
        "issuer_name_hash": hashlib.sha256(certificate.issuer.public_bytes()).hexdigest(),
        "issuer_key_hash": hashlib.sha256(public_key).hexdigest(),
        "serial_number": format(certificate.serial_number, "x"),
    }


def certificate_hash_data(pem: str) -> dict[str, str]:
    try:
        return certificate_hash_data_of(pem)
    except Exception as error:  # cryptography raises several kinds for bad input
        raise ValueError(f"not a PEM certificate: {error}") from error


def make_csr(charger_id: str) -> str:
    """A certificate signing request with CN = charger id, as a charger makes one."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, charger_id)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class DemoPlan:
    """How a simulated charger behaves when left to itself."""

    id_tags: list[str] = field(default_factory=lambda: ["DEMO0101", "DEMO0102", "DEMO0103"])
    session_seconds: tuple[float, float] = (30.0, 90.0)
    idle_seconds: tuple[float, float] = (5.0, 30.0)


async def run_simulated_charger(
    url: str,
    charger_id: str,
    config: SimulatedChargerConfig | None = None,
    plan: DemoPlan | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> None:
    """Connect, boot and keep charging cars until `stop` is set; reconnect if dropped.
    Whatever the charger is doing when `stop` is set (waiting for an answer, for a
    Pending registration's retry) is cancelled."""
    config = config or SimulatedChargerConfig()
    plan = plan or DemoPlan()
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            await run_until_stopped(stop, _connect_and_live(url, charger_id, config, plan))
        except (TimeoutError, OSError) as error:
            log.info("%s: cannot reach the central system (%s); retrying", charger_id, error)
        except Exception as error:
            log.warning("%s: %s; reconnecting", charger_id, error)
        await until_stopped(stop, 2.0)


async def _connect_and_live(
    url: str, charger_id: str, config: SimulatedChargerConfig, plan: DemoPlan
) -> None:
    address = f"{url}/{charger_id}"
    async with connect(
        address, subprotocols=[Subprotocol("ocpp1.6")], open_timeout=10, close_timeout=2
    ) as connection:
        charger = SimulatedCharger(charger_id, connection, config)
        listener = asyncio.create_task(charger.start(), name=f"{charger_id}-listener")
        try:
            await _live(charger, plan)
        finally:
            # The charger's own tasks end with its connection.
            owned = [listener, *charger._background]
            for task in owned:
                task.cancel()
            await asyncio.gather(*owned, return_exceptions=True)


async def _live(charger: SimulatedCharger, plan: DemoPlan) -> None:
    """Boot (again after each Pending or Rejected answer's interval), report status,
    then charge cars until the connection closes."""
    boot = await charger.boot()
    while boot.status != "Accepted":
        await asyncio.sleep(boot.interval)
        boot = await charger.boot()
    await charger.send_status(0, ChargePointStatus.available)
    for number in charger.connectors:
        await charger.send_status(number, ChargePointStatus.available)
    loops = [asyncio.create_task(_heartbeats(charger))] + [
        asyncio.create_task(_charge_cars(charger, number, plan)) for number in charger.connectors
    ]
    try:
        await charger.websocket.wait_closed()
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)


async def _heartbeats(charger: SimulatedCharger) -> None:
    while True:
        await asyncio.sleep(charger.heartbeat_interval)
        await charger.heartbeat()


async def _charge_cars(charger: SimulatedCharger, connector_id: int, plan: DemoPlan) -> None:
    while True:
        await asyncio.sleep(random.uniform(*plan.idle_seconds))
        in_use = {connector.id_tag for connector in charger.connectors.values()}
        free_cards = [card for card in plan.id_tags if card not in in_use]
        if charger.connectors[connector_id].transaction_id is None and free_cards:
            id_tag = random.choice(free_cards)
            await charger.run_session(connector_id, id_tag, random.uniform(*plan.session_seconds))
