"""What a tap at a reader should do: a pure function of the card's authorization and
the state of the connectors the reader serves.

The same card (or a card of the same account) on a connector that charges for it
stops that transaction; otherwise an accepted card starts charging on the reader's
connector, or, for a reader that serves a whole charger, on the first connector with
a car plugged in (Preparing), else the first Available one.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.authorization import Authorization, same_account
from edge.feedback import Signal
from edge.store.transactions import RunningTransaction

# Statuses in which a connector takes a RemoteStartTransaction (None: not reported yet).
_STARTABLE = ("Preparing", "Available", None)


@dataclass(frozen=True, slots=True)
class ConnectorView:
    connector_id: int
    status: str | None
    transaction: RunningTransaction | None = None
    # A RemoteStartTransaction accepted for this card, its StartTransaction not yet seen.
    starting_for: str | None = None
    # A RemoteStopTransaction accepted, its StopTransaction not yet seen.
    stopping: bool = False
    # The card (and its parent) of an active reservation on this connector.
    reserved_for: tuple[str, str | None] | None = None


@dataclass(frozen=True, slots=True)
class StartCharging:
    connector_id: int


@dataclass(frozen=True, slots=True)
class StopCharging:
    connector_id: int
    transaction_id: int


@dataclass(frozen=True, slots=True)
class InProgress:
    """The card's start or stop is already under way: nothing to send."""

    connector_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str
    signal: Signal = Signal.REJECTED


TapPlan = StartCharging | StopCharging | InProgress | Refuse


def plan_tap(
    uid: str,
    authorization: Authorization,
    *,
    charger_online: bool,
    connectors: list[ConnectorView],
) -> TapPlan:
    parent = authorization.parent_id_tag
    if not charger_online:
        return Refuse("charger offline", Signal.ERROR)
    for connector in connectors:
        running = connector.transaction
        if running and same_account(uid, parent, running.id_tag, running.parent_id_tag):
            if connector.stopping:
                return InProgress(connector.connector_id, "stopping")
            return StopCharging(connector.connector_id, running.transaction_id)
        if connector.starting_for and same_account(uid, parent, connector.starting_for, None):
            return InProgress(connector.connector_id, "starting")
    if not authorization.accepted:
        return Refuse(authorization.reason)
    if not connectors:
        return Refuse("the charger has not reported its connectors yet", Signal.ERROR)
    free = [c for c in connectors if _why_not_free(c, uid, parent) is None]
    if free:
        # A car already plugged in (Preparing) is the one the driver means.
        chosen = min(free, key=lambda c: (c.status != "Preparing", c.connector_id))
        return StartCharging(chosen.connector_id)
    if len(connectors) == 1:
        reason = _why_not_free(connectors[0], uid, parent)
        assert reason is not None
        signal = Signal.ERROR if connectors[0].status in ("Faulted", "Unavailable") else None
        return Refuse(reason, signal or Signal.REJECTED)
    return Refuse("no free connector")


def _why_not_free(connector: ConnectorView, uid: str, parent: str | None) -> str | None:
    if connector.transaction is not None:
        return "connector busy: another card is charging"
    if connector.starting_for is not None:
        return "connector busy: starting for another card"
    if connector.status == "Faulted":
        return "connector faulted"
    if connector.status == "Unavailable":
        return "connector out of service"
    if connector.status == "Reserved":
        reserved = connector.reserved_for
        if reserved and same_account(uid, parent, reserved[0], reserved[1]):
            return None
        return "connector reserved for another card"
    if connector.status not in _STARTABLE:
        return f"connector busy ({connector.status})"
    return None
