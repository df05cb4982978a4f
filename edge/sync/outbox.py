"""The outbox: events for the cloud, appended inside the unit of work whose change they
report, so the change and its event commit together; read in sequence order by the sync
link and deleted once the cloud acknowledged them.

Every event is made storable before it is appended (contract/storable.py): the outbox
never holds an event the cloud cannot take, which would stop every later one behind it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from sqlite_utils import Database

from contract import protocol as wire
from contract.protocol import EVENT_DATA, MAX_EVENT_BYTES, EventData
from contract.storable import storable_event
from edge.clock import utc_now_text
from edge.events import SiteEvent
from edge.store import outbox as outbox_store
from edge.store.outbox import SyncState
from edge.sync.wire_events import WireEvents

log = logging.getLogger(__name__)


class Outbox:
    """`outbox.record(db, site_event, at)` (or `append` for a wire event the sync
    features make themselves) inside a unit of work. A site without cloud sync keeps no
    outbox: events are dropped."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.wire_events = WireEvents()
        # Told of each append (on the event loop, inside the unit of work): the sync
        # link wakes and reads the outbox once that unit is committed.
        self.on_append: Callable[[], None] | None = None

    def record(self, db: Database, event: SiteEvent, at: str) -> None:
        """The site event `event`, as the cloud hears of it (if it does)."""
        if not self.enabled:
            return
        wire_event = self.wire_events.event_for(event)
        if wire_event is not None:
            self.append(db, wire_event, at)

    def append(self, db: Database, event: EventData, at: str | None = None) -> None:
        if not self.enabled:
            return
        at = at or utc_now_text()
        cleaned, data = storable_event(event, at)
        if cleaned.cleaned:
            log.warning(
                "%s event cleaned for the cloud: %s", event.kind, "; ".join(cleaned.cleaned)
            )
        outbox_store.append_event(db, at, event.kind, data)
        if self.on_append is not None:
            self.on_append()


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """The oldest unacknowledged events as one `EventBatch` payload, ready to publish."""

    first_seq: int
    last_seq: int
    count: int
    payload: bytes


def pending_batch(db: Database, edge_id: str, limit: int, max_bytes: int) -> PendingBatch | None:
    """At most `limit` of the oldest unacknowledged events, and no more than about
    `max_bytes` (at least one), as an EventBatch's JSON, with this store's epoch. Each
    event's data was made storable when it was appended, so the stored JSON is used as
    it is (no second parse), except a row an older release wrote that is too large or
    holds a NUL: cleaned now. Records the batch's last seq as sent (acks beyond the
    highest sent are refused)."""
    parts: list[str] = []
    size, first, last = 0, 0, 0
    for seq, at, data in outbox_store.oldest_events(db, limit):
        if len(data) > MAX_EVENT_BYTES or "\\u0000" in data:
            data = _cleaned_again(seq, at, data)
        part = f'{{"seq":{seq},"at":{json.dumps(at)},"data":{data}}}'
        size += len(part) + 1
        if parts and size > max_bytes:
            break
        parts.append(part)
        first, last = first or seq, seq
    if not parts:
        return None
    epoch = outbox_store.store_epoch(db)
    outbox_store.mark_sent(db, last)
    payload = (
        f'{{"edge_id":{json.dumps(edge_id)},"epoch":{json.dumps(epoch)},'
        f'"events":[{",".join(parts)}]}}'
    )
    return PendingBatch(first, last, len(parts), payload.encode())


def _cleaned_again(seq: int, at: str, data: str) -> str:
    """A stored event written before events were cleaned on the way in."""
    try:
        event = EVENT_DATA.validate_json(data)
    except ValidationError:
        return data  # the cloud will quarantine it: never stops the outbox
    _, cleaned = storable_event(event, at)
    log.warning("outbox event %s (%s) cleaned for the cloud before sending", seq, event.kind)
    return cleaned


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """What an ack did: `refused` says why it was ignored (None: taken)."""

    deleted: int
    refused: str | None = None


def acknowledge(db: Database, ack: wire.Ack, epoch: str, now: str) -> AckOutcome:
    """The cloud settled every event up to `ack.seq`: forget them. Refused (and counted)
    when the ack is for another store's epoch, or beyond the highest seq ever sent:
    taking it would forget events the cloud never had."""
    sent_seq = outbox_store.sent_seq(db)
    refused = None
    if ack.epoch is not None and ack.epoch != epoch:
        refused = f"an ack for store {ack.epoch}, this store is {epoch}"
    elif ack.seq > sent_seq:
        refused = f"an ack for seq {ack.seq}, beyond the highest sent ({sent_seq})"
    if refused is not None:
        outbox_store.count_refused_ack(db)
        return AckOutcome(0, refused)
    for entry in ack.quarantined or []:
        kind = outbox_store.event_kind(db, entry.seq) or "event"
        note = f"seq {entry.seq} ({kind}): {entry.reason} at {now}"
        log.warning("the cloud quarantined event %s", note)
        outbox_store.note_quarantined(db, note)
    if ack.quarantined_total is not None:
        outbox_store.set_cloud_quarantined(db, ack.quarantined_total)
    deleted = outbox_store.delete_events_up_to(db, ack.seq)
    outbox_store.mark_acked(db, ack.seq, now)
    return AckOutcome(deleted)


def backlog(db: Database) -> SyncState:
    """What the outbox holds, and what the cloud last said of it."""
    return outbox_store.sync_state(db)
