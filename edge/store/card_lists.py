"""The card list the cloud gave this site: the version held, and the parts of a list
that came in several messages, kept until the last one arrives."""

from __future__ import annotations

from sqlite_utils import Database


def held_version(db: Database) -> int:
    return int(db.execute("SELECT cards_version FROM sync_state WHERE id = 1").fetchone()[0])


def set_held_version(db: Database, version: int) -> None:
    db.execute("UPDATE sync_state SET cards_version = ? WHERE id = 1", [version])


def keep_part(db: Database, version: int, part: int, parts: int, document: str, now: str) -> int:
    """Keep one part of list `version` (parts of any other version, or split otherwise,
    are dropped: one list is gathered at a time); how many of its parts are here."""
    db.execute("DELETE FROM card_list_parts WHERE version != ? OR parts != ?", [version, parts])
    db.execute(
        "INSERT OR REPLACE INTO card_list_parts (version, part, parts, document, received_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [version, part, parts, document, now],
    )
    row = db.execute("SELECT count(*) FROM card_list_parts WHERE version = ?", [version])
    return int(row.fetchone()[0])


def take_parts(db: Database, version: int) -> list[str]:
    """The documents of list `version` in part order; every kept part is dropped."""
    documents = [
        str(row[0])
        for row in db.execute(
            "SELECT document FROM card_list_parts WHERE version = ? ORDER BY part", [version]
        )
    ]
    db.execute("DELETE FROM card_list_parts")
    return documents
