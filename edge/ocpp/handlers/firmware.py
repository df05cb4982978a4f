"""Firmware management profile: progress of firmware updates and diagnostics uploads."""

from __future__ import annotations

from ocpp.v16 import call_result
from ocpp.v16.enums import Action
from sqlite_utils import Database

from edge.clock import utc_now_text
from edge.events import ChargerJobReported
from edge.ocpp.library import on
from edge.ocpp.session import SessionBase
from edge.store import charger_reports
from edge.store import firmware as firmware_store


class FirmwareHandlers(SessionBase):
    async def _record_job_status(self, kind: str, status: str, request_id: int | None) -> None:
        received_at, charger_id, outbox = utc_now_text(), self.id, self.outbox

        def record(db: Database) -> None:
            charger_reports.record_job_status(db, charger_id, kind, status, request_id, received_at)
            job = ChargerJobReported(charger_id, kind, status, request_id)
            outbox.record(db, job, received_at)
            # An install the edge started moves on with what the charger says of it.
            install = firmware_store.install_status_reported(
                db, charger_id, kind, status, received_at
            )
            if install is not None:
                outbox.append(db, install, received_at)

        await self.store.run(record)

    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(
        self, status: str
    ) -> call_result.FirmwareStatusNotification:
        await self._record_job_status("firmware", status, None)
        return call_result.FirmwareStatusNotification()

    @on(Action.diagnostics_status_notification)
    async def on_diagnostics_status_notification(
        self, status: str
    ) -> call_result.DiagnosticsStatusNotification:
        await self._record_job_status("diagnostics", status, None)
        return call_result.DiagnosticsStatusNotification()
