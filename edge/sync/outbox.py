"""The outbox: events for the cloud, appended inside the unit of work whose change they
report, so the change and its event commit together; read in sequence order by the sync
link and deleted once the cloud acknowledged them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from edge.clock import utc_now
from edge.sync.protocol import EventData


class Outbox:
    """`outbox.append(db, event)` inside a unit of work. A site without cloud sync
    keeps no outbox: appends are dropped."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        # Told of each append (on the event loop, inside the unit of work): the sync
        # link wakes and reads the outbox once that unit is committed.
        self.on_append: Callable[[], None] | None = None

    def append(self, db: Database, event: EventData, at: str | None = None) -> None:
        if not self.enabled:
            return
        db.conn.execute(
            "INSERT INTO outbox (at, kind, data) VALUES (?, ?, ?)",
            (at or utc_now(), event.kind, event.model_dump_json(exclude_none=True)),
        )
        if self.on_append is not None:
            self.on_append()


@dataclass(frozen=True, slots=True)
class Backlog:
    events: int
    oldest_at: str | None
    acked_seq: int
    acked_at: str | None
    cards_version: int


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """The oldest unacknowledged events as one `EventBatch` payload, ready to publish."""

    first_seq: int
    last_seq: int
    count: int
    payload: bytes


def pending_batch(db: Database, edge_id: str, limit: int, max_bytes: int) -> PendingBatch | None:
    """At most `limit` of the oldest unacknowledged events, and no more than about
    `max_bytes` (at least one), as an EventBatch's JSON. Each event's data was validated
    when it was appended, so the stored JSON is used as it is (no second parse)."""
    parts: list[str] = []
    size, first, last = 0, 0, 0
    for seq, at, data in db.conn.execute(
        "SELECT seq, at, data FROM outbox ORDER BY seq LIMIT ?", (limit,)
    ):
        part = f'{{"seq":{seq},"at":{json.dumps(at)},"data":{data}}}'
        size += len(part) + 1
        if parts and size > max_bytes:
            break
        parts.append(part)
        first, last = first or seq, seq
    if not parts:
        return None
    payload = f'{{"edge_id":{json.dumps(edge_id)},"events":[{",".join(parts)}]}}'
    return PendingBatch(first, last, len(parts), payload.encode())


def acknowledge(db: Database, seq: int, now: str) -> int:
    """The cloud stored every event up to `seq`: forget them. Returns how many went."""
    deleted = db.conn.execute("DELETE FROM outbox WHERE seq <= ?", (seq,)).rowcount
    db.conn.execute(
        "UPDATE sync_state SET acked_seq = ?, acked_at = ? WHERE id = 1 AND acked_seq < ?",
        (seq, now, seq),
    )
    return int(deleted)


def backlog(db: Database) -> Backlog:
    count, oldest = db.conn.execute("SELECT count(*), min(at) FROM outbox").fetchone()
    acked_seq, acked_at, cards_version = db.conn.execute(
        "SELECT acked_seq, acked_at, cards_version FROM sync_state WHERE id = 1"
    ).fetchone()
    return Backlog(int(count), oldest, int(acked_seq), acked_at, int(cards_version))
