"""The outbox table (events for the cloud, in sequence order) and the sync state kept
beside it: this store's epoch, the highest seq sent and acknowledged, and what the
cloud said of refused acks and quarantined events. The rules live in edge/sync/outbox.py.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlite_utils import Database


class SyncState(NamedTuple):
    events: int
    oldest_at: str | None
    acked_seq: int
    acked_at: str | None
    cards_version: int
    epoch: str
    refused_acks: int  # acks beyond what was sent, or for another store
    cloud_quarantined: int  # this edge's events the cloud quarantined, as it last said
    last_quarantined: str | None  # the latest of them: seq, kind and reason


def append_event(db: Database, at: str, kind: str, data: str) -> None:
    db.execute("INSERT INTO outbox (at, kind, data) VALUES (?, ?, ?)", [at, kind, data])


def oldest_events(db: Database, limit: int) -> list[tuple[int, str, str]]:
    """(seq, at, data) of the `limit` oldest events."""
    rows = db.execute("SELECT seq, at, data FROM outbox ORDER BY seq LIMIT ?", [limit])
    return [(int(seq), at, data) for seq, at, data in rows]


def event_kind(db: Database, seq: int) -> str | None:
    row = db.execute("SELECT kind FROM outbox WHERE seq = ?", [seq]).fetchone()
    return None if row is None else str(row[0])


def delete_events_up_to(db: Database, seq: int) -> int:
    return int(db.execute("DELETE FROM outbox WHERE seq <= ?", [seq]).rowcount)


def store_epoch(db: Database) -> str:
    """This store's identity, made with it (migration 0009)."""
    return str(db.execute("SELECT epoch FROM sync_state WHERE id = 1").fetchone()[0])


def sent_seq(db: Database) -> int:
    return int(db.execute("SELECT sent_seq FROM sync_state WHERE id = 1").fetchone()[0])


def mark_sent(db: Database, seq: int) -> None:
    """`seq` was sent (the highest sent only moves forward)."""
    db.execute("UPDATE sync_state SET sent_seq = ? WHERE id = 1 AND sent_seq < ?", [seq, seq])


def mark_acked(db: Database, seq: int, now: str) -> None:
    db.execute(
        "UPDATE sync_state SET acked_seq = ?, acked_at = ? WHERE id = 1 AND acked_seq < ?",
        [seq, now, seq],
    )


def count_refused_ack(db: Database) -> None:
    db.execute("UPDATE sync_state SET refused_acks = refused_acks + 1 WHERE id = 1")


def note_quarantined(db: Database, note: str) -> None:
    db.execute("UPDATE sync_state SET last_quarantined = ? WHERE id = 1", [note])


def set_cloud_quarantined(db: Database, total: int) -> None:
    db.execute("UPDATE sync_state SET cloud_quarantined = ? WHERE id = 1", [total])


def sync_state(db: Database) -> SyncState:
    count, oldest = db.execute("SELECT count(*), min(at) FROM outbox").fetchone()
    row = db.execute(
        "SELECT acked_seq, acked_at, cards_version, epoch, refused_acks, cloud_quarantined, "
        "last_quarantined FROM sync_state WHERE id = 1"
    ).fetchone()
    acked_seq, acked_at, cards_version, epoch, refused_acks, quarantined, last = row
    return SyncState(
        int(count),
        oldest,
        int(acked_seq),
        acked_at,
        int(cards_version),
        str(epoch),
        int(refused_acks),
        int(quarantined),
        last,
    )
