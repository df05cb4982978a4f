"""The card table: idTags the site accepts, blocks or has let expire."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from edge.authorization import IdTagRecord

STATUSES = ("Accepted", "Blocked", "Expired", "Invalid")


def get_id_tag(db: Database, id_tag: str) -> IdTagRecord | None:
    row = db.execute(
        "SELECT id_tag, status, expiry_date, parent_id_tag FROM id_tags WHERE id_tag = ?",
        [id_tag],
    ).fetchone()
    return IdTagRecord(*row) if row else None


def save_id_tag(
    db: Database,
    id_tag: str,
    now: str,
    *,
    status: str = "Accepted",
    expiry_date: str | None = None,
    parent_id_tag: str | None = None,
    label: str | None = None,
) -> None:
    """Add a card or replace what is known of it."""
    db.execute(
        "INSERT INTO id_tags (id_tag, status, expiry_date, parent_id_tag, label, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id_tag) DO UPDATE SET "
        "status = excluded.status, expiry_date = excluded.expiry_date, "
        "parent_id_tag = excluded.parent_id_tag, label = coalesce(excluded.label, label), "
        "updated_at = excluded.updated_at",
        [id_tag, status, expiry_date, parent_id_tag, label, now, now],
    )


def set_id_tag_status(db: Database, id_tag: str, status: str, now: str) -> bool:
    """Change a known card's status; False if the card is unknown."""
    cursor = db.execute(
        "UPDATE id_tags SET status = ?, updated_at = ? WHERE id_tag = ?", [status, now, id_tag]
    )
    return cursor.rowcount > 0


def list_id_tags(db: Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM id_tags ORDER BY id_tag"))
