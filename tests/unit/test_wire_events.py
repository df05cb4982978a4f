"""Site events as the cloud hears of them: one mapping, and meter readings thinned."""

from __future__ import annotations

from typing import get_args

from contract import protocol as wire
from edge import events
from edge.sync import wire_events
from edge.sync.wire_events import WireEvents


def reading(transaction_id: int, meter_wh: int | None) -> events.MeterReading:
    energy = None if meter_wh is None else meter_wh - 1000
    return events.MeterReading("CP1", 1, transaction_id, 7400.0, energy, meter_wh)


def test_a_transaction_s_figures_go_to_the_cloud_at_most_once_a_minute() -> None:
    mapping = WireEvents()
    first = mapping.event_for(reading(7, 1500))
    assert first == wire.TransactionMeter(
        charger_id="CP1", transaction_id=7, meter_wh=1500, energy_wh=500, power_w=7400.0
    )
    assert mapping.event_for(reading(7, 1600)) is None  # within the minute
    assert mapping.event_for(reading(8, 1600)) is not None  # another transaction
    # A reading without an energy register tells the cloud nothing.
    assert mapping.event_for(reading(9, None)) is None
    assert mapping.event_for(reading(9, 1700)) is not None


def test_every_fact_has_its_wire_event() -> None:
    mapping = WireEvents()
    decided = events.CardDecided("04A2B3C4", "start", "Accepted", "card accepted", "CP1", 1, "bay")
    used = mapping.event_for(decided)
    assert isinstance(used, wire.CardUsed) and used.source == "reader"
    stopped = events.TransactionStopped(
        "CP1", 1, 7, "04A2B3C4", 500, 1500, "2026-01-01T00:00:00Z", None
    )
    assert isinstance(mapping.event_for(stopped), wire.TransactionStopped)
    connection = events.ChargerConnection("CP1", connected=False)
    assert mapping.event_for(connection) == wire.ChargerConnection(
        charger_id="CP1", connected=False
    )


def test_every_site_event_has_a_way_to_the_wire() -> None:
    own_mapping = {events.MeterReading, events.CardDecided}
    for event_type in get_args(events.SiteEvent):
        known = wire_events._SAME_FACT.keys() | own_mapping | wire_events._SITE_ONLY
        assert event_type in known, event_type
    assert WireEvents().event_for(events.ChargerAccepted("CP1")) is None
    started = events.TransactionStarted(
        "CP1", 1, 7, "04A2B3C4", "Accepted", 1000, "2026-01-01T00:00:00.000Z"
    )
    assert WireEvents().event_for(started) == wire.TransactionStarted(
        charger_id="CP1",
        connector_id=1,
        transaction_id=7,
        id_tag="04A2B3C4",
        id_tag_status="Accepted",
        meter_start_wh=1000,
        started_at="2026-01-01T00:00:00.000Z",
    )
