"""What happened at the site: one event per fact, in one vocabulary.

An event is recorded in the unit of work that stores its change (`EventRecorder`: the
sync outbox turns it into the cloud's wire event, edge/sync/wire_events.py, in that
same transaction), and the events the site's parts react to (the tap flow's feedback,
the site power limit) are published on `SiteEvents`. Events of a charger's call are
published only once the call's answer is on the wire, so a reaction (a
SetChargingProfile, say) never overtakes the answer the charger is waiting for."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from sqlite_utils import Database

    from contract.protocol import EventData

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChargerBooted:
    charger_id: str
    vendor: str
    model: str
    serial_number: str | None
    firmware_version: str | None


@dataclass(frozen=True, slots=True)
class TransactionStarted:
    charger_id: str
    connector_id: int
    transaction_id: int
    id_tag: str
    id_tag_status: str
    meter_start_wh: int
    started_at: str
    parent_id_tag: str | None = None  # the card's account, as the decision found it


@dataclass(frozen=True, slots=True)
class TransactionStopped:
    charger_id: str
    connector_id: int
    transaction_id: int
    id_tag: str
    energy_wh: int
    meter_stop_wh: int
    stopped_at: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class MeterReading:
    """A running transaction's latest figures, when the charger reported them."""

    charger_id: str
    connector_id: int
    transaction_id: int
    power_w: float | None
    energy_wh: int | None  # delivered since the transaction started
    meter_wh: int | None  # the energy register


@dataclass(frozen=True, slots=True)
class ConnectorStatusChanged:
    charger_id: str
    connector_id: int
    status: str
    error_code: str
    info: str | None = None


@dataclass(frozen=True, slots=True)
class ChargerConnection:
    charger_id: str
    connected: bool


@dataclass(frozen=True, slots=True)
class ChargerAccepted:
    """The charger's BootNotification was answered Accepted (the local list follows)."""

    charger_id: str


@dataclass(frozen=True, slots=True)
class CertificateRequestAccepted:
    """The charger's SignCertificate was answered Accepted: sign and deliver it."""

    charger_id: str
    request_id: int


# What a decision on a card does: a charger's own reader asks to authorize or start; a
# tap at one of the edge's readers starts, stops, is refused, or is ignored (under way).
CardAction = Literal["authorize", "start", "stop", "refuse", "ignore"]


@dataclass(frozen=True, slots=True)
class CardDecided:
    """A decision on a card, at one of the edge's readers (`reader_id`) or a charger's."""

    id_tag: str
    action: CardAction
    status: str
    reason: str
    charger_id: str | None
    connector_id: int | None
    reader_id: str | None


@dataclass(frozen=True, slots=True)
class ChargerJobReported:
    """A charger's progress on a firmware update, a diagnostics or a log upload."""

    charger_id: str
    job: str  # firmware, diagnostics, log, signed_firmware
    status: str
    request_id: int | None


SiteEvent = (
    ChargerBooted
    | TransactionStarted
    | TransactionStopped
    | MeterReading
    | ConnectorStatusChanged
    | ChargerConnection
    | ChargerAccepted
    | CertificateRequestAccepted
    | CardDecided
    | ChargerJobReported
)
Listener = Callable[[SiteEvent], None]


class EventRecorder(Protocol):
    """Records an event inside the unit of work that stores its change."""

    def record(self, db: Database, event: SiteEvent, at: str) -> None: ...


class SiteOutbox(EventRecorder, Protocol):
    """The sync outbox (edge/sync/outbox.py) as the site's parts hold it: site events,
    and the wire events a feature makes itself (a firmware install's progress). Typed
    here so that the OCPP side never imports edge/sync."""

    def append(self, db: Database, event: EventData, at: str | None = None) -> None: ...


class NoOutbox:
    """A site without cloud sync: events are dropped."""

    def record(self, db: Database, event: SiteEvent, at: str) -> None:
        return None

    def append(self, db: Database, event: EventData, at: str | None = None) -> None:
        return None


class SiteEvents:
    """Listeners are called in order, on the event loop, and must return at once
    (start a task for anything slow). One failing listener does not stop the others."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, event: SiteEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a listener failed on %s", event)
