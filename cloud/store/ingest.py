"""Taking what edges publish: batches of events (exactly-once effect) and presence.

`store_batch` stores a batch in one database transaction, or nothing of it: checks the
payload (size, JSON, schema, the edge id against the topic's), locks the edge's row,
skips events already stored (a repeat after a lost ack), refuses a batch that does not
continue the edge's sequence, inserts the new events, applies each to the views and
moves the edge's `last_seq`. Its result says what to acknowledge. Two aggregator
replicas given the same edge's batches store each event once and in order: the second
waits for the first's lock, then sees the events as stored.

A refused payload is logged and counted in `rejections` (per source and reason, with
the latest sample) in a transaction of its own; it changes nothing else.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Engine, func, insert, update
from sqlalchemy.exc import DataError, SQLAlchemyError

from cloud.store.database import StoreError
from cloud.store.projections import Applying, InvalidEvent, apply_event
from cloud.store.schema import edges, events, rejections
from cloud.store.statements import PendingWrites, lock_edge, upsert
from cloud.store.times import parse_time, utc_now
from edge.sync.protocol import EDGE_ID_PATTERN, MAX_PAYLOAD_BYTES, EdgeStatus, EventBatch

log = logging.getLogger(__name__)

RejectionReason = Literal["too_large", "not_json", "invalid", "wrong_edge", "gap"]
ModelT = TypeVar("ModelT", bound=BaseModel)
SAMPLE_BYTES = 200
_SOURCE_LENGTH = 255


class PayloadRefused(Exception):
    """A payload that cannot be used: `reason` is a short code, `detail` says why."""

    def __init__(self, reason: RejectionReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectionReason = reason
        self.detail = detail


@dataclass(frozen=True)
class IngestResult:
    """What became of one batch. `ack_seq`: the edge's last stored seq, to acknowledge
    (also after duplicates and gaps); None when the payload is unusable (no ack).
    `rejected`: the reason code when refused, None when taken; `detail` says why."""

    ack_seq: int | None
    stored: int
    duplicates: int
    rejected: RejectionReason | None
    detail: str = ""


def parse_payload(model: type[ModelT], payload: bytes, max_bytes: int) -> ModelT:
    """`payload` as `model`, or PayloadRefused (too_large, not_json, invalid)."""
    if len(payload) > max_bytes:
        raise PayloadRefused("too_large", f"{len(payload)} bytes, more than {max_bytes}")
    try:
        parsed = model.model_validate_json(payload)
    except ValidationError as error:
        problems = error.errors()
        if any(problem["type"] == "json_invalid" for problem in problems):
            raise PayloadRefused("not_json", str(problems[0]["msg"])) from error
        described = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in problems[:3]
        )
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise PayloadRefused("invalid", described + more) from error
    # PostgreSQL cannot hold a NUL in text (SQLite can): refused alike on both.
    if b"\\u0000" in payload and _has_nul(parsed.model_dump()):
        raise PayloadRefused("invalid", "text with a NUL character (\\u0000)")
    return parsed


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def store_batch(
    engine: Engine,
    topic_edge_id: str,
    payload: bytes,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    *,
    now: datetime | None = None,
) -> IngestResult:
    """Store the `EventBatch` in `payload`, received on `topic_edge_id`'s events topic."""
    now = now or utc_now()
    try:
        batch = parse_payload(EventBatch, payload, max_bytes)
        if batch.edge_id != topic_edge_id:
            raise PayloadRefused(
                "wrong_edge", f"the batch names edge {batch.edge_id!r}, the topic {topic_edge_id!r}"
            )
        times = [_event_time(event.seq, event.at) for event in batch.events]
    except PayloadRefused as refused:
        return _refuse(engine, topic_edge_id, payload, refused, None, now)

    edge_id = batch.edge_id
    try:
        with engine.begin() as connection:
            stored, duplicates, last_seq = _store_in_order(connection, batch, times, now)
    except _Gap as gap:
        return _refuse(
            engine, edge_id, payload, PayloadRefused("gap", gap.detail), gap.last_seq, now
        )
    except InvalidEvent as error:
        return _refuse(engine, edge_id, payload, PayloadRefused("invalid", str(error)), None, now)
    except (DataError, OverflowError) as error:
        # A value no column can hold (a number beyond 64 bits, a NUL in JSONB): as bad
        # as a schema violation, and as permanent, so refused and counted, not retried.
        detail = f"a value the store cannot hold: {getattr(error, 'orig', error)}"
        return _refuse(engine, edge_id, payload, PayloadRefused("invalid", detail), None, now)
    except SQLAlchemyError as error:
        raise StoreError(f"could not store a batch of edge {edge_id}: {error}") from error
    if duplicates:
        log.info("edge %s repeated %d stored events (a lost ack)", edge_id, duplicates)
    return IngestResult(last_seq, stored, duplicates, None)


def _store_in_order(
    connection: Connection, batch: EventBatch, times: list[datetime], now: datetime
) -> tuple[int, int, int]:
    """Store and apply the batch's events the edge's row does not count yet; (stored,
    duplicates, the edge's last seq now). _Gap when they do not continue its sequence."""
    edge_id = batch.edge_id
    last_seq = int(lock_edge(connection, edge_id, now).last_seq)
    fresh = [
        (event, at) for event, at in zip(batch.events, times, strict=True) if event.seq > last_seq
    ]
    for index, (event, _) in enumerate(fresh):
        if event.seq != last_seq + 1 + index:
            raise _Gap(f"expected seq {last_seq + 1 + index}, the batch has {event.seq}", last_seq)
    if fresh:
        connection.execute(
            insert(events),
            [
                {
                    "edge_id": edge_id,
                    "seq": event.seq,
                    "kind": event.data.kind,
                    "at": at,
                    "data": event.data.model_dump(mode="json"),
                    "received_at": now,
                }
                for event, at in fresh
            ],
        )
        pending = PendingWrites()
        for event, at in fresh:
            apply_event(Applying(connection, edge_id, event.seq, at, pending), event.data)
        pending.flush(connection)
    duplicates = len(batch.events) - len(fresh)
    connection.execute(
        update(edges)
        .where(edges.c.id == edge_id)
        .values(
            last_seq=last_seq + len(fresh),
            last_event_at=fresh[-1][1] if fresh else edges.c.last_event_at,
            duplicate_events=edges.c.duplicate_events + duplicates,
            first_seen_at=func.coalesce(edges.c.first_seen_at, now),
            last_seen_at=now,
        )
    )
    return len(fresh), duplicates, last_seq + len(fresh)


def record_status(
    engine: Engine,
    edge_id: str,
    payload: bytes,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    *,
    now: datetime | None = None,
) -> bool:
    """Take the `EdgeStatus` retained on `edge_id`'s status topic; False when refused."""
    now = now or utc_now()
    try:
        if not re.fullmatch(EDGE_ID_PATTERN, edge_id):
            raise PayloadRefused("wrong_edge", f"{edge_id!r} is not an edge id")
        status = parse_payload(EdgeStatus, payload, max_bytes)
    except PayloadRefused as refused:
        _refuse(engine, edge_id, payload, refused, None, now)
        return False
    reported: dict[str, object] = {
        "software_version": status.software_version,
        "cards_version_reported": status.cards_version,
    }
    values = {key: value for key, value in reported.items() if value is not None}
    if status.backlog is not None:
        values |= {
            "backlog": status.backlog,
            "oldest_age_s": status.oldest_age_s,
            "figures_at": now,
        }
    try:
        with engine.begin() as connection:
            lock_edge(connection, edge_id, now)
            connection.execute(
                update(edges)
                .where(edges.c.id == edge_id)
                .values(
                    state=status.state,
                    status=status.model_dump(mode="json", exclude_none=True),
                    status_at=now,
                    first_seen_at=func.coalesce(edges.c.first_seen_at, now),
                    last_seen_at=now,
                    **values,
                )
            )
    except DataError as error:
        detail = f"a value the store cannot hold: {error.orig}"
        _refuse(engine, edge_id, payload, PayloadRefused("invalid", detail), None, now)
        return False
    except SQLAlchemyError as error:
        raise StoreError(f"could not store the status of edge {edge_id}: {error}") from error
    return True


def record_rejection(
    engine: Engine, source: str, reason: str, sample: str, *, now: datetime | None = None
) -> None:
    """Count one refused payload from `source` (an edge id, or a topic with none)."""
    now = now or utc_now()
    with engine.begin() as connection:
        upsert(
            connection,
            rejections,
            {
                "source": source[:_SOURCE_LENGTH],
                "reason": reason,
                "count": 1,
                "first_at": now,
                "last_at": now,
                "sample": sample,
            },
            key=["source", "reason"],
            update={"count": rejections.c.count + 1, "last_at": now, "sample": sample},
        )


class _Gap(Exception):
    def __init__(self, detail: str, last_seq: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.last_seq = last_seq


def _event_time(seq: int, text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as error:
        raise PayloadRefused(
            "invalid", f"event {seq}: at {text!r} is not an ISO 8601 time"
        ) from error


def _refuse(
    engine: Engine,
    source: str,
    payload: bytes,
    refused: PayloadRefused,
    ack_seq: int | None,
    now: datetime,
) -> IngestResult:
    log.warning("refused a payload from %s: %s: %s", source, refused.reason, refused.detail)
    excerpt = payload[:SAMPLE_BYTES].decode("utf-8", errors="replace")
    more = "…" if len(payload) > SAMPLE_BYTES else ""
    try:
        record_rejection(
            engine, source, refused.reason, f"{refused.detail}\n{excerpt}{more}", now=now
        )
    except SQLAlchemyError:
        log.exception("could not count the refused payload from %s", source)
    return IngestResult(ack_seq, 0, 0, refused.reason, refused.detail)
