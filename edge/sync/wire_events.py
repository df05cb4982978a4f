"""The one place where the site's events (edge/events.py) become the cloud's wire
events (contract/protocol.py), and where it is decided which facts the cloud hears."""

from __future__ import annotations

import time
from dataclasses import asdict

from contract import protocol as wire
from edge import events

# A running transaction's figures go to the cloud at most this often.
METER_REPORT_SECONDS = 60.0


# Site events whose wire event carries the same fields (by name; the wire may take fewer).
_SAME_FACT: dict[type[events.SiteEvent], type[wire.EventData]] = {
    events.ChargerBooted: wire.ChargerBoot,
    events.ChargerConnection: wire.ChargerConnection,
    events.ConnectorStatusChanged: wire.ConnectorStatus,
    events.TransactionStarted: wire.TransactionStarted,
    events.TransactionStopped: wire.TransactionStopped,
    events.ChargerJobReported: wire.ChargerJob,
}

# Site events that only start work at the site (the local list push after a boot, the
# signing of a certificate request): their facts reach the cloud as other events.
_SITE_ONLY: frozenset[type[events.SiteEvent]] = frozenset(
    {events.ChargerAccepted, events.CertificateRequestAccepted}
)


class WireEvents:
    """`event_for(event)`: the wire event for a site event, or None when the cloud is not
    told (a meter reading within METER_REPORT_SECONDS of the last one sent)."""

    def __init__(self) -> None:
        self._meter_reported_at: dict[int, float] = {}

    def event_for(self, event: events.SiteEvent) -> wire.EventData | None:
        if isinstance(event, events.MeterReading):
            return self._meter_report(event)
        if isinstance(event, events.TransactionStopped):
            self._meter_reported_at.pop(event.transaction_id, None)
        if isinstance(event, events.CardDecided):
            source = "reader" if event.reader_id else "charger"
            return wire.CardUsed.model_validate({**asdict(event), "source": source})
        if type(event) in _SITE_ONLY:
            return None
        model = _SAME_FACT[type(event)]
        # The wire event takes the fields it names from the site event.
        return model.model_validate(event, from_attributes=True)

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
