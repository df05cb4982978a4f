"""The one place where the site's events (edge/events.py) become the cloud's wire
events (edge/sync/protocol.py), and where it is decided which facts the cloud hears."""

from __future__ import annotations

import time

from edge import events
from edge.sync import protocol as wire

# A running transaction's figures go to the cloud at most this often.
METER_REPORT_SECONDS = 60.0


class WireEvents:
    """`event_for(event)`: the wire event for a site event, or None when the cloud is not
    told (a meter reading within METER_REPORT_SECONDS of the last one sent)."""

    def __init__(self) -> None:
        self._meter_reported_at: dict[int, float] = {}

    def event_for(self, event: events.SiteEvent) -> wire.EventData | None:
        match event:
            case events.ChargerBooted():
                return wire.ChargerBoot(
                    charger_id=event.charger_id,
                    vendor=event.vendor,
                    model=event.model,
                    serial_number=event.serial_number,
                    firmware_version=event.firmware_version,
                )
            case events.ChargerConnection():
                return wire.ChargerConnection(
                    charger_id=event.charger_id, connected=event.connected
                )
            case events.ConnectorStatusChanged():
                return wire.ConnectorStatus(
                    charger_id=event.charger_id,
                    connector_id=event.connector_id,
                    status=event.status,
                    error_code=event.error_code,
                    info=event.info,
                )
            case events.TransactionStarted():
                return wire.TransactionStarted(
                    charger_id=event.charger_id,
                    connector_id=event.connector_id,
                    transaction_id=event.transaction_id,
                    id_tag=event.id_tag,
                    id_tag_status=event.id_tag_status,
                    meter_start_wh=event.meter_start_wh,
                    started_at=event.started_at,
                )
            case events.MeterReading():
                return self._meter_report(event)
            case events.TransactionStopped():
                self._meter_reported_at.pop(event.transaction_id, None)
                return wire.TransactionStopped(
                    charger_id=event.charger_id,
                    transaction_id=event.transaction_id,
                    meter_stop_wh=event.meter_stop_wh,
                    energy_wh=event.energy_wh,
                    stopped_at=event.stopped_at,
                    reason=event.reason,
                )
            case events.CardDecided():
                return wire.CardUsed(
                    id_tag=event.id_tag,
                    source="reader" if event.reader_id else "charger",
                    action=event.action,
                    status=event.status,
                    reason=event.reason,
                    charger_id=event.charger_id,
                    connector_id=event.connector_id,
                    reader_id=event.reader_id,
                )
            case events.ChargerJobReported():
                return wire.ChargerJob(
                    charger_id=event.charger_id,
                    job=event.job,
                    status=event.status,
                    request_id=event.request_id,
                )

    def _meter_report(self, reading: events.MeterReading) -> wire.TransactionMeter | None:
        if not reading.meter_wh or reading.energy_wh is None:
            return None
        now = time.monotonic()
        last = self._meter_reported_at.get(reading.transaction_id, -METER_REPORT_SECONDS)
        if now - last < METER_REPORT_SECONDS:
            return None
        self._meter_reported_at[reading.transaction_id] = now
        return wire.TransactionMeter(
            charger_id=reading.charger_id,
            transaction_id=reading.transaction_id,
            meter_wh=reading.meter_wh,
            energy_wh=reading.energy_wh,
            power_w=reading.power_w,
        )
