"""Changing cards across a fleet's sites: one card from the web view's forms, or every line
of a CSV import, planned against the lists as they are and written all at once.

A `CardChange` says what one card becomes: the fields to set, the sites to set them at
(adding the card where it is missing), the sites to take it from, and the card's revision
the change was made from. `preview_changes` plans without writing; `change_cards` plans
again inside the write transaction, and writes only when the plan holds no error, every
card is still at the revision its change was made from (else `CardsChanged`, naming who
changed what) and, for an import, the plan is the one previewed (its digest). Each edge
whose list changes gets one new version through `card_writes` (the path of the API's
`PUT /api/edges/{edge}/cards`); nothing is written when anything is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, select

from cloud.store import card_writes
from cloud.store.card_writes import EntryChange, card_key
from cloud.store.database import StoreError, reading
from cloud.store.schema import chargers, edge_cards, edges, fleet_cards, fleets
from cloud.store.statements import lock_edge
from cloud.store.times import utc_now
from contract.protocol import CardEntry

BATCH = card_writes.BATCH
Outcome = Literal["added", "changed", "blocked", "removed", "unchanged"]


@dataclass(frozen=True)
class CardChange:
    """What one card of a fleet becomes."""

    id_tag: str
    # CardEntry fields to set; those absent keep their value (a new entry: the defaults).
    fields: Mapping[str, Any] = field(default_factory=dict)
    # Sites that get `fields`, the card added where they lack it; None: every site
    # holding the card.
    at: frozenset[str] | None = None
    remove_from: frozenset[str] = frozenset()
    # The card is at these sites only, afterwards: those holding it elsewhere lose it.
    keep_only: frozenset[str] | None = None
    # A card no site holds yet, with `at` None: added at every site of the fleet.
    new_everywhere: bool = False
    # The card's revision the change was made from (0: never changed); None: unchecked.
    expected_revision: int | None = None
    # Made as a new card: refused when a site of the fleet holds it already.
    new: bool = False
    line: int | None = None  # the CSV line it comes from


@dataclass(frozen=True)
class ChangeError:
    line: int | None
    id_tag: str
    reason: str


@dataclass(frozen=True)
class StaleCard:
    """A card changed since the form or preview was made: by whom, when, how."""

    id_tag: str
    expected: int | None
    revision: int
    changed_at: datetime | None
    changed_by: str | None
    change: str | None
    sites: tuple[str, ...]  # the sites holding it now


@dataclass(frozen=True)
class CardOutcome:
    id_tag: str
    outcome: Outcome
    words: str
    line: int | None


@dataclass(frozen=True)
class CardPlan:
    mark: int  # the fleet's cards_revision the plan was made at
    edges: dict[str, dict[str, EntryChange]]  # per site, per card key: only real changes
    cards: dict[str, CardOutcome]  # per card key, every card the changes name
    errors: list[ChangeError]
    stale: list[StaleCard]
    digest: str

    def count(self, outcome: Outcome) -> int:
        return sum(1 for card in self.cards.values() if card.outcome == outcome)


class CardEditRefused(StoreError):
    """Changes that cannot be made as asked; `errors` says which and why."""

    def __init__(self, errors: list[ChangeError]) -> None:
        first = errors[0]
        where = f"line {first.line}: " if first.line is not None else ""
        super().__init__(f"{where}{first.reason}")
        self.errors = errors


class CardsChanged(StoreError):
    """Cards changed since the change was made from them; nothing was written."""

    def __init__(self, stale: list[StaleCard]) -> None:
        names = ", ".join(card.id_tag for card in stale[:5])
        super().__init__(f"changed by someone else since you read them: {names}")
        self.stale = stale


@dataclass(frozen=True)
class ChangeResult:
    revision: int
    versions: dict[str, int]  # the new list version of each site changed
    plan: CardPlan


# -- the state a plan is made on ------------------------------------------------------------


@dataclass
class _FleetState:
    mark: int
    site_names: dict[str, str]
    held: dict[str, dict[str, CardEntry]]  # card key -> site -> entry
    known: dict[str, Any]  # card key -> fleet_cards row
    chargers: dict[str, set[str]]  # charger id -> sites that have it


def _read_state(
    connection: Connection, fleet_id: int, changes: Sequence[CardChange], mark: int | None
) -> _FleetState:
    if mark is None:
        mark = int(
            connection.execute(
                select(fleets.c.cards_revision).where(fleets.c.id == fleet_id)
            ).scalar_one()
        )
    sites = connection.execute(
        select(edges.c.id, edges.c.site_name).where(edges.c.fleet_id == fleet_id)
    ).all()
    site_names = {row.id: row.site_name or row.id for row in sites}
    keys = sorted({card_key(change.id_tag) for change in changes})
    held: dict[str, dict[str, CardEntry]] = {}
    known: dict[str, Any] = {}
    for start in range(0, len(keys), BATCH):
        chunk = keys[start : start + BATCH]
        for row in connection.execute(
            select(edge_cards).where(
                edge_cards.c.fleet_id == fleet_id, edge_cards.c.id_key.in_(chunk)
            )
        ):
            held.setdefault(row.id_key, {})[row.edge_id] = card_writes.entry_of(row)
        for row in connection.execute(
            select(fleet_cards).where(
                fleet_cards.c.fleet_id == fleet_id, fleet_cards.c.id_key.in_(chunk)
            )
        ):
            known[row.id_key] = row
    named = sorted(
        {charger for change in changes for charger in change.fields.get("chargers") or []}
    )
    found: dict[str, set[str]] = {}
    for start in range(0, len(named), BATCH):
        for row in connection.execute(
            select(chargers.c.charger_id, chargers.c.edge_id)
            .join(edges, edges.c.id == chargers.c.edge_id)
            .where(
                edges.c.fleet_id == fleet_id,
                chargers.c.charger_id.in_(named[start : start + BATCH]),
            )
        ):
            found.setdefault(row.charger_id, set()).add(row.edge_id)
    return _FleetState(mark, site_names, held, known, found)


# -- planning (pure, on the state read) ------------------------------------------------------


def _plan(state: _FleetState, changes: Sequence[CardChange]) -> CardPlan:
    per_edge: dict[str, dict[str, EntryChange]] = {}
    outcomes: dict[str, CardOutcome] = {}
    errors: list[ChangeError] = []
    stale: list[StaleCard] = []
    # Lines of one card (several sites' entries) are planned on what earlier ones made.
    planned: dict[str, dict[str, CardEntry | None]] = {}
    first_lines: dict[str, CardChange] = {}
    for change in changes:
        key = card_key(change.id_tag)
        first_lines.setdefault(key, change)
        held = state.held.get(key, {})
        known = state.known.get(key)
        revision = int(known.revision) if known is not None else 0
        if (change.new and held) or (
            change.expected_revision is not None and change.expected_revision != revision
        ):
            stale.append(_stale(change, key, state))
            continue
        current = {**held, **planned.get(key, {})}
        present = {site: entry for site, entry in current.items() if entry is not None}
        spelling = next(iter(held.values())).id_tag if held else change.id_tag
        targets = change.at
        if targets is None:
            targets = frozenset(present or (state.site_names if change.new_everywhere else ()))
        removals = change.remove_from | (
            frozenset(present) - change.keep_only if change.keep_only is not None else frozenset()
        )
        problem = _problem(change, targets, removals, present, state)
        if problem is not None:
            errors.append(ChangeError(change.line, change.id_tag, problem))
            continue
        after: dict[str, CardEntry | None] = {}
        # Sites holding the card alike get the same entry: checked once.
        made: dict[tuple[Any, ...], CardEntry] = {}
        try:
            # A site new to the card gets the card as another site holds it.
            model = next(iter(present.values()), None) or CardEntry(id_tag=spelling)
            for site in sorted(targets):
                base = present.get(site) or model
                shape = card_writes.shape_of_card(base)
                if shape not in made:
                    made[shape] = CardEntry.model_validate(
                        base.model_dump() | dict(change.fields) | {"id_tag": base.id_tag}
                    )
                after[site] = made[shape]
        except ValidationError as error:
            reason = "; ".join(
                f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
                for issue in error.errors()
            )
            errors.append(ChangeError(change.line, change.id_tag, reason))
            continue
        for site in removals - targets:
            if site in present:
                after[site] = None
        planned.setdefault(key, {}).update(after)
    for key, after in planned.items():
        held = state.held.get(key, {})
        card_changes = {
            site: EntryChange(held.get(site), entry)
            for site, entry in after.items()
            if held.get(site) != entry
        }
        for site, entry_change in card_changes.items():
            per_edge.setdefault(site, {})[key] = entry_change
        first = first_lines[key]
        id_tag = next(iter(held.values())).id_tag if held else first.id_tag
        outcomes[key] = CardOutcome(
            id_tag,
            _outcome(held, card_changes),
            card_writes.describe_change(card_changes, state.site_names)
            if card_changes
            else "no change",
            first.line,
        )
    return CardPlan(state.mark, per_edge, outcomes, errors, stale, _digest(per_edge))


def _problem(
    change: CardChange,
    targets: frozenset[str],
    removals: frozenset[str],
    present: Mapping[str, CardEntry],
    state: _FleetState,
) -> str | None:
    named = (change.at or frozenset()) | change.remove_from | (change.keep_only or frozenset())
    unknown = sorted(site for site in named if site not in state.site_names)
    if unknown:
        return f"no site {unknown[0]!r} in your fleet"
    if change.at is not None and change.at & change.remove_from:
        return "a site cannot both hold the card and lose it"
    if not targets and not (removals & set(present)):
        return f"card {change.id_tag} is at no site of your fleet"
    final = (set(present) | targets) - (removals - targets)
    for charger in change.fields.get("chargers") or []:
        if not state.chargers.get(charger, set()) & final:
            return f"no charger {charger!r} at the card's sites"
    return None


def _outcome(held: Mapping[str, CardEntry], changes: Mapping[str, EntryChange]) -> Outcome:
    if not changes:
        return "unchanged"
    if not held:
        return "added"
    if all(change.after is None for change in changes.values()) and not (set(held) - set(changes)):
        return "removed"
    blocked_before = any(entry.status == "Blocked" for entry in held.values())
    for change in changes.values():
        if change.after is None or change.after.status != "Blocked":
            continue
        if change.before is not None and change.before.status != "Blocked":
            return "blocked"
        if change.before is None and not blocked_before:
            return "blocked"
    return "changed"


def _stale(change: CardChange, key: str, state: _FleetState) -> StaleCard:
    known = state.known.get(key)
    held = state.held.get(key, {})
    return StaleCard(
        id_tag=next(iter(held.values())).id_tag if held else change.id_tag,
        expected=change.expected_revision,
        revision=int(known.revision) if known is not None else 0,
        changed_at=known.changed_at if known is not None else None,
        changed_by=known.changed_by if known is not None else None,
        change=known.change if known is not None else None,
        sites=tuple(state.site_names.get(site, site) for site in sorted(state.held.get(key, {}))),
    )


def _digest(per_edge: Mapping[str, Mapping[str, EntryChange]]) -> str:
    """The plan's changes, before and after, as one SHA-256: equal plans, equal digests."""

    def dump(entry: CardEntry | None) -> Any:
        return None if entry is None else card_writes.shape_of_card(entry)

    items = [
        [site, key, dump(change.before), dump(change.after)]
        for site in sorted(per_edge)
        for key, change in sorted(per_edge[site].items())
    ]
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()


# -- reading and writing ----------------------------------------------------------------------


def preview_changes(engine: Engine, fleet_id: int, changes: Sequence[CardChange]) -> CardPlan:
    """What `change_cards` would do now, without doing it."""
    with reading(engine) as connection:
        return _plan(_read_state(connection, fleet_id, changes, None), changes)


def change_cards(
    engine: Engine,
    fleet_id: int,
    changes: Sequence[CardChange],
    actor: str,
    *,
    previewed: tuple[int, str] | None = None,
    now: datetime | None = None,
) -> ChangeResult:
    """Make `changes` in one transaction. `previewed`: the (mark, digest) of the preview
    the user saw; when the plan is another now, CardsChanged names the cards changed
    since. CardEditRefused for errors; CardListError for a list grown too large."""
    now = now or utc_now()
    with engine.begin() as connection:
        revision = card_writes.bump_cards_revision(connection, fleet_id)
        state = _read_state(connection, fleet_id, changes, revision - 1)
        plan = _plan(state, changes)
        if plan.stale:
            raise CardsChanged(plan.stale)
        if plan.errors:
            raise CardEditRefused(plan.errors)
        if previewed is not None and plan.digest != previewed[1]:
            raise CardsChanged(_changed_since(connection, fleet_id, changes, previewed[0], state))
        versions: dict[str, int] = {}
        written: dict[str, dict[str, EntryChange]] = {}
        for site in sorted(plan.edges):
            edge = lock_edge(connection, site, now)
            if edge.fleet_id != fleet_id:
                raise CardEditRefused([ChangeError(None, "", f"site {site} left your fleet")])
            done = card_writes.write_card_changes(connection, edge, plan.edges[site], now)
            versions[site] = done.version
            written[site] = done.changes
        card_writes.record_card_changes(
            connection,
            fleet_id,
            revision,
            written,
            actor,
            now,
            state.site_names,
            {key: outcome.words for key, outcome in plan.cards.items()},
        )
    return ChangeResult(revision, versions, plan)


def _changed_since(
    connection: Connection,
    fleet_id: int,
    changes: Sequence[CardChange],
    mark: int,
    state: _FleetState,
) -> list[StaleCard]:
    """The cards `changes` name that changed after revision `mark`."""
    keys = {card_key(change.id_tag) for change in changes}
    rows = connection.execute(
        select(fleet_cards)
        .where(fleet_cards.c.fleet_id == fleet_id, fleet_cards.c.revision > mark)
        .order_by(fleet_cards.c.revision.desc())
    ).all()
    stale = [
        StaleCard(
            id_tag=row.id_tag,
            expected=mark,
            revision=int(row.revision),
            changed_at=row.changed_at,
            changed_by=row.changed_by,
            change=row.change,
            sites=tuple(
                state.site_names.get(site, site) for site in sorted(state.held.get(row.id_key, {}))
            ),
        )
        for row in rows
        if row.id_key in keys
    ]
    if not stale:
        # No card of the import changed: the fleet's sites did (one joined or left).
        stale.append(StaleCard("", mark, state.mark, None, None, "the fleet's sites changed", ()))
    return stale
