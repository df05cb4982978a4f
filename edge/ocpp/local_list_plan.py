"""Which cards a charger's OCPP local list holds, sent in which parts: plain decisions
on plain data, and the parts' wire form made once per card-table version and shared
between chargers.

What a charger can take comes from edge/ocpp/local_list_limits.py. The card table at one
version becomes a `Catalogue`: each card's SendLocalList entry, checked against the
official schema and encoded to JSON once.
A charger's `ListPush` is a list of card ids cut into parts of at most its
SendLocalListMaxLength, a Full first and Differentials after it, each part with its own
listVersion ending at the card table's, so a push cut part-way goes on where it stopped.
When the table holds more cards for a charger than its LocalAuthListMaxLength, it holds
the cards limited to it first, then the most recently used, then the rest (Accepted
before others, by idTag); the edge's Authorize answers for the others while it runs.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ocpp.exceptions import OCPPError
from sqlite_utils import Database

from edge.ocpp.local_list_limits import ListLimits
from edge.ocpp.schemas import validate_request
from edge.store import local_lists
from edge.store.local_lists import CatalogueCard, ListState

log = logging.getLogger(__name__)

PushType = Literal["Full", "Differential"]

# Pushes (their ids and parts' JSON) kept for other chargers of the same limits.
PUSHES_CACHED = 16

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


# -- The card table at one version, as entries ------------------------------------------


@dataclass(frozen=True)
class Catalogue:
    """The card table at `version`: each card's entry as JSON text, and the orders a
    charger's share is taken in. Its size follows the cards, not the chargers."""

    version: int
    entries: dict[str, str]
    # (stamp, id) of every card, by stamp: the cards changed since a version.
    stamps: list[int]
    stamped_ids: list[str]
    # Limited cards -> the chargers they are limited to.
    limits: dict[str, frozenset[str]]
    limited_by_priority: tuple[str, ...]
    unlimited_by_priority: tuple[str, ...]
    unlimited_by_id: tuple[str, ...]
    # Cards whose entry breaks the schema (a charger would refuse the part): left out.
    left_out: tuple[str, ...] = ()

    def cards_for(self, charger_id: str) -> tuple[str, ...]:
        """The limited cards meant for `charger_id`, by priority."""
        return tuple(card for card in self.limited_by_priority if charger_id in self.limits[card])


def build_catalogue(
    version: int, cards: Iterable[CatalogueCard], limits: Mapping[str, frozenset[str]]
) -> Catalogue:
    cards = list(cards)
    wire = {card.id_tag: _entry(card) for card in cards}
    left_out = _invalid_entries(wire)
    for id_tag in left_out:
        del wire[id_tag]
    entries = {id_tag: _ENCODER.encode(entry) for id_tag, entry in wire.items()}

    def priority(card: CatalogueCard) -> tuple[bool, int, bool, str]:
        # Most recently used first, then the never used: Accepted before the others.
        never_used = card.last_use is None
        return (never_used, -(card.last_use or 0), card.status != "Accepted", card.id_tag)

    usable = sorted((card for card in cards if card.id_tag in entries), key=priority)
    by_stamp = sorted((card.stamp, card.id_tag) for card in cards)
    return Catalogue(
        version=version,
        entries=entries,
        stamps=[stamp for stamp, _ in by_stamp],
        stamped_ids=[id_tag for _, id_tag in by_stamp],
        limits={card: chargers for card, chargers in limits.items() if card in entries},
        limited_by_priority=tuple(card.id_tag for card in usable if card.id_tag in limits),
        unlimited_by_priority=tuple(card.id_tag for card in usable if card.id_tag not in limits),
        unlimited_by_id=tuple(sorted(card.id_tag for card in usable if card.id_tag not in limits)),
        left_out=tuple(sorted(left_out)),
    )


def _entry(card: CatalogueCard) -> dict[str, Any]:
    info: dict[str, Any] = {"status": card.status}
    if card.expiry_date is not None:
        info["expiryDate"] = card.expiry_date
    if card.parent_id_tag is not None:
        info["parentIdTag"] = card.parent_id_tag
    return {"idTag": card.id_tag, "idTagInfo": info}


def _invalid_entries(wire: dict[str, dict[str, Any]]) -> list[str]:
    """Cards whose entry breaks the SendLocalList schema: all checked in one call, one
    by one only when that fails."""
    try:
        _check_entries(list(wire.values()))
        return []
    except OCPPError:
        pass
    invalid = []
    for id_tag, entry in wire.items():
        try:
            _check_entries([entry])
        except OCPPError as error:
            log.warning("card %r left out of local lists: %s", id_tag, error.description)
            invalid.append(id_tag)
    return invalid


def _check_entries(entries: list[dict[str, Any]]) -> None:
    payload = {"listVersion": 1, "updateType": "Full", "localAuthorizationList": entries}
    validate_request("SendLocalList", payload)


CatalogueRows = tuple[int, list[CatalogueCard], dict[str, frozenset[str]]]


def _catalogue_rows(db: Database) -> CatalogueRows:
    return (
        local_lists.card_list_version(db),
        local_lists.catalogue_cards(db),
        local_lists.card_limits(db),
    )


def catalogue_from(db: Database) -> Catalogue:
    return build_catalogue(*_catalogue_rows(db))


# -- One charger's push ----------------------------------------------------------------


@dataclass
class ListPush:
    """A charger's list at `card_version`, in `parts`: part 1 is `push_type` (Full, or
    Differential from `since`), the others Differential; part k carries listVersion
    `first_version + k - 1`, the last the card table's version."""

    card_version: int
    push_type: PushType
    since: int
    ids: tuple[str, ...]
    removals: frozenset[str]
    part_size: int
    held: int
    cards: int
    max_length: int
    digest: str
    catalogue: Catalogue = field(repr=False)
    _texts: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def parts(self) -> int:
        return max(1, math.ceil(len(self.ids) / self.part_size))

    @property
    def last_version(self) -> int:
        return max(self.card_version, 1)

    @property
    def first_version(self) -> int:
        return self.last_version - self.parts + 1

    def list_version(self, part: int) -> int:
        return self.first_version + part - 1

    def update_type(self, part: int) -> PushType:
        return self.push_type if part == 1 else "Differential"

    def part_ids(self, part: int) -> tuple[str, ...]:
        return self.ids[(part - 1) * self.part_size : part * self.part_size]

    def text(self, part: int) -> str:
        """Part `part`'s SendLocalList payload as JSON, made once for every charger."""
        text = self._texts.get(part)
        if text is None:
            entries = self.catalogue.entries
            listed = ",".join(
                f'{{"idTag":{_ENCODER.encode(card)}}}' if card in self.removals else entries[card]
                for card in self.part_ids(part)
            )
            text = (
                f'{{"listVersion":{self.list_version(part)},'
                f'"updateType":"{self.update_type(part)}","localAuthorizationList":[{listed}]}}'
            )
            self._texts[part] = text
        return text


def full_push(catalogue: Catalogue, charger_id: str, limits: ListLimits) -> ListPush:
    """Everything for the charger, or its share when that is more than it holds: cards
    limited to it, then the most recently used, then the rest."""
    own = catalogue.cards_for(charger_id)
    cards = len(own) + len(catalogue.unlimited_by_priority)
    if cards <= limits.max_length:
        # All of it: in idTag order, so that a push cut part-way is the same push later.
        ids = tuple(sorted(own)) + catalogue.unlimited_by_id
    else:
        ids = (own + catalogue.unlimited_by_priority)[: limits.max_length]
    return _push(catalogue, "Full", 0, ids, frozenset(), limits, cards)


def differential_push(
    catalogue: Catalogue, charger_id: str, limits: ListLimits, since: int
) -> ListPush:
    """What changed since the charger's complete list at `since`: removals first (cards
    no longer for it), so the list never grows past its final size on the way."""
    start = bisect.bisect_right(catalogue.stamps, since)
    removals, updates = [], []
    for card in sorted(catalogue.stamped_ids[start:]):
        allowed = catalogue.limits.get(card)
        if card not in catalogue.entries or (allowed is not None and charger_id not in allowed):
            removals.append(card)
        else:
            updates.append(card)
    cards = len(catalogue.cards_for(charger_id)) + len(catalogue.unlimited_by_priority)
    return _push(
        catalogue, "Differential", since, (*removals, *updates), frozenset(removals), limits, cards
    )


def _push(
    catalogue: Catalogue,
    push_type: PushType,
    since: int,
    ids: tuple[str, ...],
    removals: frozenset[str],
    limits: ListLimits,
    cards: int,
) -> ListPush:
    part_size = limits.send_max_length
    # Each part needs its own listVersion above the one before the push (a Differential's
    # must exceed the charger's): the card table's counter leaves room for one part per
    # card, so this only widens parts if the store was changed behind the triggers.
    room = max(max(catalogue.version, 1) - since, 1)
    if math.ceil(len(ids) / part_size) > room:
        part_size = math.ceil(len(ids) / room)
        log.warning("local list parts widened to %d entries to fit list versions", part_size)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{catalogue.version}\n{push_type}\n{since}\n{part_size}\n".encode())
    for card in ids:
        digest.update(b"-" if card in removals else b"+")
        digest.update(card.encode())
        digest.update(b"\n")
    held = cards if push_type == "Differential" else len(ids)
    return ListPush(
        card_version=catalogue.version,
        push_type=push_type,
        since=since,
        ids=ids,
        removals=removals,
        part_size=part_size,
        held=held,
        cards=cards,
        max_length=limits.max_length,
        digest=digest.hexdigest(),
        catalogue=catalogue,
    )


@dataclass(frozen=True)
class Next:
    """The push to send and its first part to send (after 1: a cut push resumed; after
    the last: the charger took every part, only the last answer was lost)."""

    push: ListPush
    part: int


def choose_push(
    lists: LocalListCache,
    catalogue: Catalogue,
    charger_id: str,
    limits: ListLimits,
    state: ListState,
    reported: int,
) -> Next | None:
    """What the charger needs, given what the edge gave it (`state`) and the listVersion
    it reports; None: it holds the card table's list already."""
    version = catalogue.version
    in_step = state.list_version is not None and reported == state.list_version
    # Everything for it fits (held as before), or the same share was chosen for as much room.
    fits = state.complete and (state.cards or 0) <= limits.max_length
    if in_step and state.version == version and (fits or state.max_length == limits.max_length):
        return None
    # A push cut part-way: the charger reports the last part the edge saw it accept, or
    # the next one (it took that part; its answer was lost with the connection).
    resumable = state.list_version is not None and reported - state.list_version in (0, 1)
    if resumable and state.push_version == version and state.push_type in ("Full", "Differential"):
        push_type: PushType = "Differential" if state.push_type == "Differential" else "Full"
        since = state.version if push_type == "Differential" else 0
        push = lists.push(catalogue, charger_id, limits, push_type, since)
        done = reported - push.first_version + 1
        if push.digest == state.push_digest and 1 <= done <= push.parts:
            return Next(push, done + 1)
    cards = len(catalogue.cards_for(charger_id)) + len(catalogue.unlimited_by_priority)
    if (
        in_step
        and state.complete
        and state.status in ("listed", "refused")
        and 0 < state.version < version
        and cards <= limits.max_length
    ):
        return Next(lists.push(catalogue, charger_id, limits, "Differential", state.version), 1)
    return Next(lists.push(catalogue, charger_id, limits, "Full", 0), 1)


# -- Shared between chargers ------------------------------------------------------------


class LocalListCache:
    """The site's catalogue of the newest card-table version and the pushes made from
    it, kept for the next charger of the same limits (at most `PUSHES_CACHED`), and one
    lock per charger so two pushes to one charger never interleave."""

    def __init__(self, pushes_cached: int = PUSHES_CACHED) -> None:
        self._catalogue: Catalogue | None = None
        self._building = asyncio.Lock()
        self._pushes: OrderedDict[tuple[Any, ...], ListPush] = OrderedDict()
        self._pushes_cached = pushes_cached
        self._chargers: dict[str, asyncio.Lock] = {}
        self.catalogues_built = 0

    def lock(self, charger_id: str) -> asyncio.Lock:
        return self._chargers.setdefault(charger_id, asyncio.Lock())

    async def catalogue(
        self,
        version: int,
        run: Callable[[Callable[[Database], CatalogueRows]], Awaitable[CatalogueRows]],
    ) -> Catalogue:
        """The catalogue at `version` or newer (built with `run`, the store's, when older)."""
        async with self._building:
            if self._catalogue is None or self._catalogue.version < version:
                # Read on the store's connection; made (schema checks, JSON: some 100 ms
                # for 5,000 cards) in a thread, so the loop goes on serving chargers.
                rows = await run(_catalogue_rows)
                self._catalogue = await asyncio.to_thread(build_catalogue, *rows)
                self._pushes.clear()
                self.catalogues_built += 1
            return self._catalogue

    def push(
        self,
        catalogue: Catalogue,
        charger_id: str,
        limits: ListLimits,
        push_type: PushType,
        since: int,
    ) -> ListPush:
        """The push for these limits, shared with every charger it is the same for (it
        differs only by the limited cards among it)."""
        if push_type == "Full":
            mine: tuple[Any, ...] = catalogue.cards_for(charger_id)
        else:
            start = bisect.bisect_right(catalogue.stamps, since)
            mine = tuple(
                (card, charger_id in catalogue.limits[card])
                for card in catalogue.stamped_ids[start:]
                if card in catalogue.limits
            )
        key = (
            catalogue.version,
            push_type,
            since,
            limits.send_max_length,
            limits.max_length,
            mine,
        )
        push = self._pushes.get(key)
        if push is not None:
            self._pushes.move_to_end(key)
            return push
        if push_type == "Full":
            push = full_push(catalogue, charger_id, limits)
        else:
            push = differential_push(catalogue, charger_id, limits, since)
        self._pushes[key] = push
        while len(self._pushes) > self._pushes_cached:
            self._pushes.popitem(last=False)
        return push
