"""What happened at the site, told to the parts that react to it (the tap flow's
feedback, the site power limit). Events of a charger's call are published only once
the call's answer is on the wire, so a reaction (a SetChargingProfile, say) never
overtakes the answer the charger is waiting for."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TransactionStarted:
    charger_id: str
    connector_id: int
    transaction_id: int
    id_tag: str
    id_tag_status: str


@dataclass(frozen=True, slots=True)
class TransactionStopped:
    charger_id: str
    connector_id: int
    transaction_id: int
    id_tag: str
    energy_wh: int


@dataclass(frozen=True, slots=True)
class MeterReading:
    """A running transaction's latest figures, when the charger reported them."""

    charger_id: str
    connector_id: int
    transaction_id: int
    power_w: float | None
    energy_wh: int | None  # delivered since the transaction started


@dataclass(frozen=True, slots=True)
class ConnectorStatusChanged:
    charger_id: str
    connector_id: int
    status: str
    error_code: str


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


SiteEvent = (
    TransactionStarted
    | TransactionStopped
    | MeterReading
    | ConnectorStatusChanged
    | ChargerConnection
    | ChargerAccepted
    | CertificateRequestAccepted
)
Listener = Callable[[SiteEvent], None]


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
