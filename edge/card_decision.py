"""The one path every decision on a card takes, whether the card was read by one of the
edge's readers (a tap) or by a charger's own reader (Authorize, StartTransaction):
what the store knows of the card, the decision, the stored record with its reason, and
the card remembered when it is not in the card table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlite_utils import Database

from edge.authorization import Authorization, authorize_card
from edge.clock import format_utc
from edge.events import CardAction, EventRecorder
from edge.settings import AuthorizationSettings
from edge.store import card_decisions, id_tags

Plan = TypeVar("Plan")


@dataclass(frozen=True, slots=True)
class CardPresented:
    """A card shown at a charger: at one of the edge's readers, or (no reader) at the
    charger's own. `connector_id` is where it was shown, when that is known."""

    id_tag: str
    at: datetime
    charger_id: str | None
    connector_id: int | None = None
    reader_id: str | None = None

    @property
    def where(self) -> str:
        return f"reader {self.reader_id}" if self.reader_id else f"charger {self.charger_id}"


@dataclass(frozen=True, slots=True)
class Choice(Generic[Plan]):
    """What the caller makes of an authorization: its plan, and how the record names it."""

    plan: Plan
    action: CardAction
    reason: str
    connector_id: int | None


@dataclass(frozen=True, slots=True)
class CardDecision(Generic[Plan]):
    authorization: Authorization
    plan: Plan
    decision_id: int


def decide_card(
    db: Database,
    outbox: EventRecorder,
    card: CardPresented,
    settings: AuthorizationSettings,
    choose: Callable[[Authorization], Choice[Plan]],
) -> CardDecision[Plan]:
    """Decide on `card` and record the decision in the same transaction."""
    now = format_utc(card.at)
    facts = id_tags.card_facts(db, card.id_tag, card.charger_id, card.connector_id)
    authorization = authorize_card(
        facts,
        card.charger_id,
        card.at,
        unknown_cards=settings.unknown_cards,
        cache_days=settings.cache_days,
    )
    choice = choose(authorization)
    decision_id = card_decisions.record_card_decision(
        db,
        outbox,
        id_tag=card.id_tag,
        source="reader" if card.reader_id else "charger",
        action=choice.action,
        authorization=authorization,
        reason=choice.reason,
        now=now,
        reader_id=card.reader_id,
        charger_id=card.charger_id,
        connector_id=choice.connector_id,
    )
    if authorization.remember_unknown:
        card_decisions.remember_unknown_card(db, card.id_tag, authorization, card.where, now)
    return CardDecision(authorization, choice.plan, decision_id)


def as_charger_decides(
    action: CardAction, connector_id: int | None
) -> Callable[[Authorization], Choice[Authorization]]:
    """For a card at a charger's own reader the authorization is the whole decision."""
    return lambda authorization: Choice(authorization, action, authorization.reason, connector_id)
