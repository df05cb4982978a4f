"""The card table's local-list version, and what each charger holds of it.

Every change to a card moves `local_list_counter` on and stamps the card with it
(triggers in the migrations), so what a charger lacks is the cards stamped after the
version it holds. A charger's row says which card-table version it holds (`version`, 0:
none the edge knows of), how much of it (`held` of `cards`, chosen under `max_length`),
a push under way or cut part-way, refusals with the wait before the next try, and when
its local-list configuration keys were last read (docs/ocpp.md, "Local lists").
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from sqlite_utils import Database

# The configuration keys that say what a charger's local list can take (OCPP 1.6 §9.1).
LIST_KEYS = (
    "LocalAuthListEnabled",
    "LocalAuthListMaxLength",
    "SendLocalListMaxLength",
    "SupportedFeatureProfiles",
)


class ListedCard(NamedTuple):
    """A card changed since a version, and whether it is for the charger asked about."""

    id_tag: str
    status: str
    expiry_date: str | None
    parent_id_tag: str | None
    limited: bool  # the card is limited to some chargers...
    allowed: bool  # ...and this charger is one of them


class CatalogueCard(NamedTuple):
    """A card as every charger's list is made from it: `stamp` is the list version of its
    last change, `last_use` the id of the newest decision on it (None: never used)."""

    id_tag: str
    status: str
    expiry_date: str | None
    parent_id_tag: str | None
    stamp: int
    last_use: int | None


@dataclass(frozen=True)
class ListState:
    """One charger's row of `local_lists` (a charger without one: `ListState()`)."""

    version: int = 0
    status: str = "listed"
    detail: str | None = None
    list_version: int | None = None
    reported_version: int | None = None
    held: int | None = None
    cards: int | None = None
    max_length: int | None = None
    push_version: int | None = None
    push_type: str | None = None
    push_digest: str | None = None
    push_parts: int | None = None
    failures: int = 0
    retry_at: str | None = None
    failed_version: int | None = None
    failed_boot: str | None = None
    keys_read_boot: str | None = None
    keys_read_at: str | None = None
    updated_at: str | None = None

    @property
    def complete(self) -> bool:
        """The charger holds every card of `version` meant for it."""
        return self.version > 0 and self.held is not None and self.held == self.cards


_STATE_COLUMNS = tuple(field.name for field in fields(ListState))


@dataclass(frozen=True)
class SyncFacts:
    """What a push decides from, read in one unit of work."""

    card_version: int
    state: ListState
    # The charger's last_boot_at ('' if it never booted here).
    boot: str
    # Its local-list keys as last reported (a key it did not report is absent).
    configuration: dict[str, str | None]


def card_list_version(db: Database) -> int:
    return int(db.execute("SELECT version FROM local_list_counter").fetchone()[0])


def confirmed_version(db: Database, charger_id: str) -> int:
    """The card-table version `charger_id` holds (0: none)."""
    row = db.execute(
        "SELECT version FROM local_lists WHERE charger_id = ?", [charger_id]
    ).fetchone()
    return int(row[0]) if row else 0


def confirmed_versions(db: Database) -> dict[str, int]:
    return {
        row[0]: int(row[1]) for row in db.execute("SELECT charger_id, version FROM local_lists")
    }


def list_state(db: Database, charger_id: str) -> ListState:
    row = db.execute(
        f"SELECT {', '.join(_STATE_COLUMNS)} FROM local_lists WHERE charger_id = ?",
        [charger_id],
    ).fetchone()
    return ListState(*row) if row else ListState()


def list_states(db: Database) -> dict[str, ListState]:
    rows = db.execute(f"SELECT charger_id, {', '.join(_STATE_COLUMNS)} FROM local_lists")
    return {row[0]: ListState(*row[1:]) for row in rows}


def sync_facts(db: Database, charger_id: str) -> SyncFacts:
    boot = db.execute("SELECT last_boot_at FROM chargers WHERE id = ?", [charger_id]).fetchone()
    return SyncFacts(
        card_list_version(db),
        list_state(db, charger_id),
        (boot[0] or "") if boot else "",
        list_keys(db, charger_id),
    )


def list_keys(db: Database, charger_id: str) -> dict[str, str | None]:
    """The charger's local-list keys as it last reported them."""
    marks = ", ".join("?" for _ in LIST_KEYS)
    rows = db.execute(
        f"SELECT key, value FROM charger_configuration WHERE charger_id = ? AND key IN ({marks})",
        [charger_id, *LIST_KEYS],
    )
    return dict(rows.fetchall())


def reported_list_keys(db: Database) -> dict[str, dict[str, str | None]]:
    """Every charger's local-list keys as last reported."""
    marks = ", ".join("?" for _ in LIST_KEYS)
    keys: dict[str, dict[str, str | None]] = {}
    rows = db.execute(
        f"SELECT charger_id, key, value FROM charger_configuration WHERE key IN ({marks})",
        list(LIST_KEYS),
    )
    for charger_id, key, value in rows:
        keys.setdefault(charger_id, {})[key] = value
    return keys


def _update(db: Database, charger_id: str, now: str, columns: dict[str, Any]) -> None:
    """Insert the charger's row or update `columns` of it (names from this module only)."""
    names = ["version", *(name for name in columns if name != "version")]
    values = [columns.get("version", 0), *(columns[name] for name in names[1:])]
    updates = ", ".join(f"{name} = excluded.{name}" for name in names if name in columns)
    db.execute(
        f"INSERT INTO local_lists (charger_id, {', '.join(names)}, updated_at) "
        f"VALUES (?, {', '.join('?' for _ in names)}, ?) ON CONFLICT (charger_id) DO UPDATE "
        f"SET {updates + ', ' if updates else ''}updated_at = excluded.updated_at",
        [charger_id, *values, now],
    )


def record_keys_read(db: Database, charger_id: str, boot: str, now: str) -> None:
    """The local-list keys were asked for after the boot at `boot`."""
    _update(db, charger_id, now, {"keys_read_boot": boot, "keys_read_at": now})


def record_skipped(db: Database, charger_id: str, detail: str, now: str) -> None:
    """The charger takes no list from the edge (no feature, disabled): why."""
    _update(
        db,
        charger_id,
        now,
        {"status": "skipped", "detail": detail, "failures": 0, "retry_at": None},
    )


def record_listed(db: Database, charger_id: str, now: str) -> None:
    """The charger holds the list the edge gave it (found so after a refusal or a skip)."""
    _update(
        db, charger_id, now, {"status": "listed", "detail": None, "failures": 0, "retry_at": None}
    )


def record_reported_version(db: Database, charger_id: str, version: int, now: str) -> None:
    _update(db, charger_id, now, {"reported_version": version})


@dataclass(frozen=True)
class AcceptedPart:
    """A part of a push the charger accepted; `part` counts from 1 to `parts`."""

    card_version: int
    push_type: str
    digest: str
    part: int
    parts: int
    list_version: int
    held: int
    cards: int
    max_length: int


def record_part_accepted(db: Database, charger_id: str, accepted: AcceptedPart, now: str) -> None:
    """The charger took a part: the push goes on from it, or is done with the last one."""
    if accepted.part == accepted.parts:
        columns: dict[str, Any] = {
            "version": accepted.card_version,
            "status": "listed",
            "detail": None,
            "held": accepted.held,
            "cards": accepted.cards,
            "max_length": accepted.max_length,
            "push_version": None,
            "push_type": None,
            "push_digest": None,
            "push_parts": None,
        }
    else:
        columns = {
            "status": "pushing",
            "detail": f"part {accepted.part} of {accepted.parts} accepted",
            "push_version": accepted.card_version,
            "push_type": accepted.push_type,
            "push_digest": accepted.digest,
            "push_parts": accepted.parts,
        }
        if accepted.part == 1 and accepted.push_type == "Full":
            # The charger's former list is gone: it holds none of a version until the end.
            columns["version"] = 0
    columns.update(
        list_version=accepted.list_version,
        reported_version=accepted.list_version,
        failures=0,
        retry_at=None,
        failed_version=None,
        failed_boot=None,
    )
    _update(db, charger_id, now, columns)


def record_refusal(
    db: Database,
    charger_id: str,
    detail: str,
    failures: int,
    retry_at: str,
    card_version: int,
    boot: str,
    now: str,
) -> None:
    _update(
        db,
        charger_id,
        now,
        {
            "status": "refused",
            "detail": detail,
            "failures": failures,
            "retry_at": retry_at,
            "failed_version": card_version,
            "failed_boot": boot,
        },
    )


def record_other_list(db: Database, charger_id: str, list_version: int, now: str) -> None:
    """The charger accepted a list that is not the card table's (an operator's own
    entries): it holds no version the edge knows of."""
    _update(
        db,
        charger_id,
        now,
        {
            "version": 0,
            "status": "listed",
            "detail": "holds a list sent with entries of its own",
            "list_version": list_version,
            "reported_version": list_version,
            "held": None,
            "cards": None,
            "push_version": None,
            "push_type": None,
            "push_digest": None,
            "push_parts": None,
        },
    )


def catalogue_cards(db: Database) -> list[CatalogueCard]:
    """Every card with its last change's stamp and its newest use."""
    rows = db.execute(
        "SELECT id_tag, status, expiry_date, parent_id_tag, list_version, "
        "(SELECT max(d.id) FROM card_decisions d WHERE d.id_tag = t.id_tag) FROM id_tags t"
    )
    return [CatalogueCard(*row) for row in rows]


def card_limits(db: Database) -> dict[str, frozenset[str]]:
    """The chargers each limited card is limited to (cards without a limit are absent)."""
    limits: dict[str, set[str]] = {}
    rows = db.execute(
        "SELECT t.id_tag, c.charger_id FROM id_tag_chargers c JOIN id_tags t ON t.id_tag = c.id_tag"
    )
    for id_tag, charger_id in rows:
        limits.setdefault(id_tag, set()).add(charger_id)
    return {id_tag: frozenset(chargers) for id_tag, chargers in limits.items()}


def cards_changed_since(db: Database, charger_id: str, since: int) -> list[ListedCard]:
    """Cards stamped after list version `since` (-1: every card), by idTag."""
    rows = db.execute(
        "SELECT id_tag, status, expiry_date, parent_id_tag, "
        "EXISTS (SELECT 1 FROM id_tag_chargers c WHERE c.id_tag = t.id_tag), "
        "EXISTS (SELECT 1 FROM id_tag_chargers c WHERE c.id_tag = t.id_tag "
        "AND c.charger_id = ?) FROM id_tags t WHERE list_version > ? ORDER BY id_tag",
        [charger_id, since],
    )
    return [
        ListedCard(id_tag, status, expiry, parent, bool(limited), bool(allowed))
        for id_tag, status, expiry, parent, limited, allowed in rows
    ]
