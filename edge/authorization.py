"""Deciding what a card may do: a pure function of the card's record and the time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edge.clock import parse_timestamp


@dataclass(frozen=True, slots=True)
class IdTagRecord:
    """A row of the card table, as the decision needs it."""

    id_tag: str
    status: str
    expiry_date: str | None = None
    parent_id_tag: str | None = None


@dataclass(frozen=True, slots=True)
class Authorization:
    """OCPP 1.6 IdTagInfo: status, and expiry/parent the charger may cache."""

    status: str
    expiry_date: str | None = None
    parent_id_tag: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "Accepted"


def authorize_id_tag(
    record: IdTagRecord | None, now: datetime, *, charging_elsewhere: bool = False
) -> Authorization:
    """The IdTagInfo to answer for a card.

    Unknown cards are Invalid; a card past its expiry date is Expired whatever its
    stored status; an accepted card already charging on another connector is
    ConcurrentTx, so one card cannot run two sessions at once.
    """
    if record is None:
        return Authorization("Invalid")
    extra = {"expiry_date": record.expiry_date, "parent_id_tag": record.parent_id_tag}
    if record.status == "Blocked":
        return Authorization("Blocked", **extra)
    expired = record.expiry_date is not None and parse_timestamp(record.expiry_date) <= now
    if record.status == "Expired" or expired:
        return Authorization("Expired", **extra)
    if record.status != "Accepted":
        return Authorization("Invalid", **extra)
    if charging_elsewhere:
        return Authorization("ConcurrentTx", **extra)
    return Authorization("Accepted", **extra)
