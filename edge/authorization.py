"""Deciding what a card may do: pure functions of what is known of the card, where it
is presented, the time and the site's settings. Every decision carries its reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from edge.clock import parse_timestamp

UnknownCardPolicy = Literal["reject", "accept"]


@dataclass(frozen=True, slots=True)
class IdTagRecord:
    """A row of the card table, as the decision needs it."""

    id_tag: str
    status: str
    expiry_date: str | None = None
    parent_id_tag: str | None = None


@dataclass(frozen=True, slots=True)
class CachedDecision:
    """An earlier decision on a card that is not in the card table."""

    status: str
    decided_at: str
    source: str  # "setting" (unknown_cards) or "cloud"
    expiry_date: str | None = None
    parent_id_tag: str | None = None


@dataclass(frozen=True, slots=True)
class CardFacts:
    """What the store knows of a card, for one decision."""

    record: IdTagRecord | None
    # The chargers the card is limited to; empty: any charger.
    allowed_chargers: frozenset[str] = frozenset()
    cached: CachedDecision | None = None
    # An open transaction of this card on another connector.
    charging_elsewhere: bool = False


@dataclass(frozen=True, slots=True)
class Authorization:
    """OCPP 1.6 IdTagInfo (status, and expiry/parent the charger may cache), the reason
    in words, and whether the card should be remembered as seen-but-unknown."""

    status: str
    expiry_date: str | None = None
    parent_id_tag: str | None = None
    reason: str = field(default="", compare=False)
    remember_unknown: bool = field(default=False, compare=False)

    @property
    def accepted(self) -> bool:
        return self.status == "Accepted"


def authorize_id_tag(
    record: IdTagRecord | None, now: datetime, *, charging_elsewhere: bool = False
) -> Authorization:
    """The IdTagInfo to answer for a card of the card table.

    Unknown cards are Invalid; a card past its expiry date is Expired whatever its
    stored status; an accepted card already charging on another connector is
    ConcurrentTx, so one card cannot run two sessions at once.
    """
    if record is None:
        return Authorization("Invalid", reason="unknown card")
    expired = record.expiry_date is not None and parse_timestamp(record.expiry_date) <= now
    if record.status == "Blocked":
        status, reason = "Blocked", "card blocked"
    elif record.status == "Expired" or expired:
        status, reason = "Expired", "card expired"
    elif record.status != "Accepted":
        status, reason = "Invalid", f"card status {record.status}"
    elif charging_elsewhere:
        status, reason = "ConcurrentTx", "card already charging elsewhere"
    else:
        status, reason = "Accepted", "card accepted"
    return Authorization(status, record.expiry_date, record.parent_id_tag, reason=reason)


def authorize_card(
    facts: CardFacts,
    charger_id: str | None,
    now: datetime,
    *,
    unknown_cards: UnknownCardPolicy = "reject",
    cache_days: int = 30,
) -> Authorization:
    """The decision for a card presented at `charger_id` (None: no charger yet).

    The card table decides for its cards, within their charger limits. A card outside
    it takes a still-fresh decision the cloud made on it, else the `unknown_cards`
    setting (the cloud cannot be asked offline). Unknown cards are remembered, with the
    decision, so that an operator can review and enrol them.
    """
    if facts.record is not None:
        decision = authorize_id_tag(facts.record, now, charging_elsewhere=facts.charging_elsewhere)
        limited = facts.allowed_chargers and charger_id is not None
        if decision.accepted and limited and charger_id not in facts.allowed_chargers:
            return Authorization(
                "Invalid",
                decision.expiry_date,
                decision.parent_id_tag,
                reason=f"card not allowed at charger {charger_id}",
            )
        return decision
    cached = facts.cached
    fresh = cached is not None and parse_timestamp(cached.decided_at) > now - timedelta(cache_days)
    if cached is not None and cached.source == "cloud" and fresh:
        record = IdTagRecord("", cached.status, cached.expiry_date, cached.parent_id_tag)
        decision = authorize_id_tag(record, now, charging_elsewhere=facts.charging_elsewhere)
        return Authorization(
            decision.status,
            decision.expiry_date,
            decision.parent_id_tag,
            reason=f"not in the card table; {decision.reason} by the {cached.source} "
            f"on {cached.decided_at[:10]}",
            remember_unknown=True,
        )
    if unknown_cards == "accept":
        if facts.charging_elsewhere:
            return Authorization(
                "ConcurrentTx",
                reason="unknown card already charging elsewhere",
                remember_unknown=True,
            )
        return Authorization(
            "Accepted",
            reason="unknown card accepted while the cloud cannot be asked (unknown_cards)",
            remember_unknown=True,
        )
    return Authorization("Invalid", reason="unknown card", remember_unknown=True)


def same_account(card: str, card_parent: str | None, other: str, other_parent: str | None) -> bool:
    """Whether two cards belong together: the same card, or the same parent idTag
    (an apartment's or a fleet's cards), or one is the other's parent."""
    if card.upper() == other.upper():
        return True
    if card_parent and other_parent and card_parent.upper() == other_parent.upper():
        return True
    return bool(
        (card_parent and card_parent.upper() == other.upper())
        or (other_parent and other_parent.upper() == card.upper())
    )
