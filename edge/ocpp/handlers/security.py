"""The OCPP 1.6 security whitepaper's charger-initiated messages."""

from __future__ import annotations

import logging

from ocpp.v16 import call_result
from ocpp.v16.enums import Action, GenericStatus

from edge.certificates import CertificateRequestRejected
from edge.clock import normalize_timestamp, utc_now_text
from edge.events import CertificateRequestAccepted
from edge.ocpp.handlers.firmware import FirmwareHandlers
from edge.ocpp.library import on
from edge.store import certificates, charger_reports

log = logging.getLogger(__name__)


class SecurityHandlers(FirmwareHandlers):
    @on(Action.security_event_notification)
    async def on_security_event_notification(
        self, type: str, timestamp: str, tech_info: str | None = None
    ) -> call_result.SecurityEventNotification:
        log.warning("security event from %s: %s %s", self.id, type, tech_info or "")
        charger_timestamp, received_at, charger_id = (
            normalize_timestamp(timestamp),
            utc_now_text(),
            self.id,
        )
        await self.store.run(
            lambda db: charger_reports.record_security_event(
                db, charger_id, type, tech_info, charger_timestamp, received_at
            )
        )
        return call_result.SecurityEventNotification()

    @on(Action.sign_certificate)
    async def on_sign_certificate(self, csr: str) -> call_result.SignCertificate:
        """Check the CSR now (valid, CN = this charger); sign and deliver it after answering."""
        received_at, charger_id = utc_now_text(), self.id
        status, reason = "accepted", None
        authority = self.context.certificate_authority
        if authority is None:
            status, reason = "rejected", "this edge has no site CA"
        else:
            try:
                authority.check_request(csr, charger_id)
            except CertificateRequestRejected as error:
                status, reason = "rejected", str(error)
        if reason:
            log.warning("certificate request from %s rejected: %s", charger_id, reason)
        request_id = await self.store.run(
            lambda db: certificates.record_certificate_request(
                db, charger_id, csr, received_at, status, reason
            )
        )
        if status == "accepted":
            self.announce(CertificateRequestAccepted(charger_id, request_id))
        accepted = GenericStatus.accepted if status == "accepted" else GenericStatus.rejected
        return call_result.SignCertificate(status=accepted)

    @on(Action.signed_firmware_status_notification)
    async def on_signed_firmware_status_notification(
        self, status: str, request_id: int | None = None
    ) -> call_result.SignedFirmwareStatusNotification:
        await self._record_job_status("signed_firmware", status, request_id)
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.log_status_notification)
    async def on_log_status_notification(
        self, status: str, request_id: int | None = None
    ) -> call_result.LogStatusNotification:
        await self._record_job_status("log", status, request_id)
        return call_result.LogStatusNotification()
