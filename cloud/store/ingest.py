"""Taking what edges publish: batches of events (exactly-once effect) and presence.

`store_batch` takes a batch in one database transaction: checks the payload (size, JSON,
the envelope's schema, the edge id against the topic's), locks the edge's row, follows
the edge's store epoch (a new store starts its sequence again), skips events already
settled (a repeat after a lost ack), refuses a batch that does not continue the edge's
sequence, inserts the new events, applies each to the views and moves the edge's
`last_seq`. Its result says what to acknowledge. Two aggregator replicas given the same
edge's batches store each event once and in order: the second waits for the first's
lock, then sees the events as settled.

An event the cloud will never store (it breaks the schema, holds a value no store takes,
or is larger than `max_event_bytes`) is quarantined instead: kept aside with its reason
and the raw event (bounded), counted, and acknowledged with the others, so that one bad
event never holds back the edge's later ones. The good events of the batch are stored in
order around it.

A refused payload (unreadable, not a batch, another edge's, a gap, an old store's) is
logged and counted in `rejections` (per source and reason, with the latest sample) in a
transaction of its own; it changes nothing else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    SQLAlchemyError,
    StatementError,
)

from cloud.store.alerts import count_refusal_at
from cloud.store.campaigns import CAMPAIGN_KINDS, follow_batch
from cloud.store.database import StoreError
from cloud.store.overview import COUNTED_KINDS, refresh_charger_counts
from cloud.store.presence import PRESENCE_HISTORY_PER_EDGE, record_change
from cloud.store.projections import Applying, apply_event
from cloud.store.schema import edge_epochs, edges, events, quarantined_events, rejections
from cloud.store.session_writes import DEFAULT_MAX_METER_SAMPLES, SessionWrites
from cloud.store.statements import PendingWrites, lock_edge, upsert
from cloud.store.status_history import STATUS_HISTORY_PER_CHARGER, trim_status_history
from cloud.store.tariffs import hold_tariffs
from cloud.store.times import parse_time, utc_now
from contract.protocol import (
    EDGE_ID_PATTERN,
    EPOCH_PATTERN,
    EVENT_DATA,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_PAYLOAD_BYTES,
    ConnectorStatus,
    EdgeStatus,
    EventData,
    TransactionStopped,
    is_edge_id,
)
from contract.storable import safe_text, unstorable_reason

log = logging.getLogger(__name__)

RejectionReason = Literal[
    "too_large", "not_json", "invalid", "wrong_edge", "gap", "old_epoch", "not_offered"
]
QuarantineReason = Literal["invalid", "too_large", "unstorable"]
ModelT = TypeVar("ModelT", bound=BaseModel)
SAMPLE_BYTES = 200
QUARANTINE_SAMPLE_BYTES = 16_384
_SOURCE_LENGTH = 255
_VALUE_ERRORS = (SQLAlchemyError, ValueError, OverflowError)


def _caused_by_a_value(error: BaseException) -> bool:
    """An error a value in an event causes, as opposed to the store failing: the event
    holding the value is quarantined; anything else is a StoreError and nothing is
    acknowledged (the edge sends the batch again)."""
    if isinstance(error, DataError | IntegrityError | OverflowError | ValueError):
        return True  # InvalidEvent is a ValueError
    # A bind parameter no column type takes (SQLAlchemy's own, not the database's).
    return isinstance(error, StatementError) and not isinstance(error, DBAPIError)


class PayloadRefused(Exception):
    """A payload that cannot be used: `reason` is a short code, `detail` says why."""

    def __init__(self, reason: RejectionReason, detail: str) -> None:
        detail = safe_text(detail)  # it may quote the sender's field names
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectionReason = reason
        self.detail = detail


@dataclass(frozen=True)
class IngestResult:
    """What became of one batch. `ack_seq`: the edge's last settled seq (of its store
    `epoch`), to acknowledge (also after duplicates and gaps); None when the payload is
    unusable (no ack). `rejected`: the reason code when refused, None when taken;
    `detail` says why. `quarantined`: (seq, reason) of the batch's events put aside;
    `quarantined_total`: the edge's count of them, all stores."""

    ack_seq: int | None
    stored: int
    duplicates: int
    rejected: RejectionReason | None
    detail: str = ""
    epoch: str | None = None
    quarantined: tuple[tuple[int, QuarantineReason], ...] = ()
    quarantined_total: int = 0


class _RawEvent(BaseModel):
    """An event as the envelope carries it: its place in the sequence must be readable
    (or nothing of the batch can be placed); its time and data are checked one by one."""

    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=1, strict=True)
    at: Any
    data: Any


class _RawBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edge_id: str = Field(pattern=EDGE_ID_PATTERN)
    epoch: str | None = Field(None, pattern=EPOCH_PATTERN)
    events: list[_RawEvent] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


@dataclass
class _Checked:
    """One event of a batch, checked: `data` and `at` when it can be stored, else the
    reason to quarantine it."""

    seq: int
    raw: _RawEvent
    at: datetime | None = None
    data: EventData | None = None
    reason: QuarantineReason | None = None
    detail: str = ""
    kind: str | None = field(default=None)


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
        raise PayloadRefused("invalid", _described(error)) from error
    # What one store takes and another refuses (a NUL, an integer beyond 64 bits, an
    # infinite number) is refused alike on both.
    problem = unstorable_reason(parsed.model_dump())
    if problem:
        raise PayloadRefused("invalid", problem)
    return parsed


def _described(error: ValidationError) -> str:
    problems = error.errors(include_url=False, include_input=False)
    described = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in problems[:3]
    )
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return described + more


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_batch(payload: bytes, max_bytes: int) -> _RawBatch:
    """The envelope of an EventBatch, its events unchecked, or PayloadRefused."""
    if len(payload) > max_bytes:
        raise PayloadRefused("too_large", f"{len(payload)} bytes, more than {max_bytes}")
    try:
        # The standard parser takes a lone surrogate escape (pydantic's refuses the whole
        # text): then only the event holding it is quarantined, not the batch refused.
        document = json.loads(payload, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise PayloadRefused("not_json", str(error)[:200]) from error
    try:
        return _RawBatch.model_validate(document)
    except ValidationError as error:
        raise PayloadRefused("invalid", _described(error)) from error


def _check_event(raw: _RawEvent, measure: bool, max_event_bytes: int) -> _Checked:
    checked = _Checked(raw.seq, raw)
    if isinstance(raw.data, dict) and isinstance(raw.data.get("kind"), str):
        checked.kind = safe_text(raw.data["kind"][:64])
    if measure:
        size = len(_raw_json(raw))
        if size > max_event_bytes:
            return _quarantine(checked, "too_large", f"{size} bytes, more than {max_event_bytes}")
    if not isinstance(raw.at, str):
        return _quarantine(checked, "invalid", "at: not a time")
    try:
        checked.at = parse_time(raw.at)
    except (ValueError, OverflowError):
        return _quarantine(checked, "invalid", f"at: {raw.at[:40]!r} is not an ISO 8601 time")
    try:
        data = EVENT_DATA.validate_python(raw.data)
    except ValidationError as error:
        return _quarantine(checked, "invalid", _described(error))
    problem = unstorable_reason(data.model_dump())
    if problem:
        return _quarantine(checked, "invalid", problem)
    checked.data = data
    return checked


def _quarantine(checked: _Checked, reason: QuarantineReason, detail: str) -> _Checked:
    checked.reason, checked.detail = reason, safe_text(detail)
    return checked


def _raw_json(raw: _RawEvent) -> str:
    """The event as JSON, every non-ASCII character escaped: any text column holds it."""
    try:
        return json.dumps(raw.model_dump(), ensure_ascii=True, default=str)
    except (ValueError, RecursionError):
        return repr(raw.model_dump())


def store_batch(
    engine: Engine,
    topic_edge_id: str,
    payload: bytes,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    *,
    max_event_bytes: int = MAX_EVENT_BYTES,
    sample_bytes: int = QUARANTINE_SAMPLE_BYTES,
    max_meter_samples: int = DEFAULT_MAX_METER_SAMPLES,
    status_history: int = STATUS_HISTORY_PER_CHARGER,
    now: datetime | None = None,
) -> IngestResult:
    """Store the `EventBatch` in `payload`, received on `topic_edge_id`'s events topic."""
    now = now or utc_now()
    try:
        batch = parse_batch(payload, max_bytes)
        if batch.edge_id != topic_edge_id:
            raise PayloadRefused(
                "wrong_edge", f"the batch names edge {batch.edge_id!r}, the topic {topic_edge_id!r}"
            )
    except PayloadRefused as refused:
        return _refuse(engine, topic_edge_id, payload, refused, None, now)
    measure = len(payload) > max_event_bytes  # else no event can be larger
    checked = [_check_event(raw, measure, max_event_bytes) for raw in batch.events]
    storing = _Storing(
        batch.edge_id, batch.epoch, checked, now, sample_bytes, max_meter_samples, status_history
    )
    try:
        try:
            with engine.begin() as connection:
                result = storing.store(connection, one_by_one=False)
        except _VALUE_ERRORS as error:
            if not _caused_by_a_value(error):
                raise
            # A value the store refused: every event again, each in a savepoint of its
            # own, so that only the one holding it is quarantined.
            with engine.begin() as connection:
                result = storing.store(connection, one_by_one=True)
    except _Gap as gap:
        gap_refused = PayloadRefused("gap", gap.detail)
        return _refuse(engine, batch.edge_id, payload, gap_refused, gap.last_seq, now, batch.epoch)
    except _OldEpoch as old:
        old_refused = PayloadRefused("old_epoch", str(old))
        return _refuse(engine, batch.edge_id, payload, old_refused, None, now)
    except SQLAlchemyError as error:
        raise StoreError(f"could not store a batch of edge {batch.edge_id}: {error}") from error
    if result.duplicates:
        log.info("edge %s repeated %d stored events (a lost ack)", batch.edge_id, result.duplicates)
    for seq, reason in result.quarantined:
        log.warning("edge %s: event %s quarantined (%s)", batch.edge_id, seq, reason)
    return result


def count_refusal(
    engine: Engine,
    source: str,
    payload: bytes,
    refused: PayloadRefused,
    now: datetime | None = None,
) -> None:
    """Log and count a payload refused outside a batch (a firmware request)."""
    _refuse(engine, source, payload, refused, None, now or utc_now())


class _Gap(Exception):
    def __init__(self, detail: str, last_seq: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.last_seq = last_seq


class _OldEpoch(Exception):
    """A batch from a store the edge has replaced."""


@dataclass
class _Storing:
    """One batch's events, checked, on their way into one transaction."""

    edge_id: str
    epoch: str | None
    checked: list[_Checked]
    now: datetime
    sample_bytes: int
    max_meter_samples: int = DEFAULT_MAX_METER_SAMPLES
    status_history: int = STATUS_HISTORY_PER_CHARGER
    fleet_id: int | None = None  # the edge's, once its row is locked

    def store(self, connection: Connection, *, one_by_one: bool) -> IngestResult:
        if any(isinstance(event.data, TransactionStopped) for event in self.checked):
            # A stop is priced: tariffs stay as they are until this batch commits (taken
            # before any row lock, so that a tariff change never waits on a row of ours).
            hold_tariffs(connection)
        edge = lock_edge(connection, self.edge_id, self.now)
        self.fleet_id = edge.fleet_id
        offset, last_seq = self._follow_epoch(connection, edge)
        fresh = [event for event in self.checked if event.seq > last_seq]
        for index, event in enumerate(fresh):
            if event.seq != last_seq + 1 + index:
                raise _Gap(
                    f"expected seq {last_seq + 1 + index}, the batch has {event.seq}", last_seq
                )
        quarantined: list[tuple[int, QuarantineReason]] = []
        if one_by_one:
            for event in fresh:
                if event.reason is None:
                    try:
                        with connection.begin_nested():
                            self._insert_and_apply(connection, offset, [event])
                    except _VALUE_ERRORS as error:
                        if not _caused_by_a_value(error):
                            raise
                        detail = str(getattr(error, "orig", None) or error)
                        _quarantine(event, "unstorable", f"the store refused it: {detail[:300]}")
                if event.reason is not None:
                    self._put_aside(connection, offset, event)
                    quarantined.append((event.seq, event.reason))
        else:
            good = [event for event in fresh if event.reason is None]
            self._insert_and_apply(connection, offset, good)
            for event in fresh:
                if event.reason is not None:
                    self._put_aside(connection, offset, event)
                    quarantined.append((event.seq, event.reason))
        duplicates = len(self.checked) - len(fresh)
        times = [event.at for event in fresh if event.at is not None]
        total = int(edge.quarantined_events) + len(quarantined)
        connection.execute(
            update(edges)
            .where(edges.c.id == self.edge_id)
            .values(
                last_seq=last_seq + len(fresh),
                last_event_at=max(times) if times else edges.c.last_event_at,
                duplicate_events=edges.c.duplicate_events + duplicates,
                quarantined_events=total,
                first_seen_at=func.coalesce(edges.c.first_seen_at, self.now),
                last_seen_at=self.now,
            )
        )
        return IngestResult(
            last_seq + len(fresh),
            len(fresh) - len(quarantined),
            duplicates,
            None,
            epoch=self.epoch,
            quarantined=tuple(quarantined),
            quarantined_total=total,
        )

    def _follow_epoch(self, connection: Connection, edge: Any) -> tuple[int, int]:
        """(seq offset, last seq) of the batch's store, switching to a new store when
        the batch comes from one the edge never had; _OldEpoch for one it replaced."""
        offset, last_seq = int(edge.seq_offset), int(edge.last_seq)
        if self.epoch == edge.epoch:
            return offset, last_seq
        if self.epoch is None:
            raise _OldEpoch(
                f"a batch without a store epoch; edge {self.edge_id} is at {edge.epoch}"
            )
        if edge.epoch is None:
            # The first epoch of an edge (new, or from a release before epochs): it
            # continues the sequence the cloud holds.
            self._record_epoch(connection, offset)
            connection.execute(
                update(edges).where(edges.c.id == self.edge_id).values(epoch=self.epoch)
            )
            return offset, last_seq
        known = connection.execute(
            select(edge_epochs.c.started_at).where(
                edge_epochs.c.edge_id == self.edge_id, edge_epochs.c.epoch == self.epoch
            )
        ).one_or_none()
        if known is not None:
            raise _OldEpoch(
                f"store {self.epoch} of edge {self.edge_id} was replaced by {edge.epoch}"
            )
        # A new store: its seq 1 follows the old store's last event.
        offset += last_seq
        log.warning(
            "edge %s has a new store (epoch %s after %s at seq %d): its events from seq 1 "
            "follow the old store's",
            self.edge_id,
            self.epoch,
            edge.epoch,
            last_seq,
        )
        self._record_epoch(connection, offset)
        connection.execute(
            update(edges)
            .where(edges.c.id == self.edge_id)
            .values(epoch=self.epoch, seq_offset=offset, last_seq=0)
        )
        return offset, 0

    def _record_epoch(self, connection: Connection, offset: int) -> None:
        connection.execute(
            insert(edge_epochs).values(
                edge_id=self.edge_id, epoch=self.epoch, seq_offset=offset, started_at=self.now
            )
        )

    def _insert_and_apply(
        self, connection: Connection, offset: int, good: Sequence[_Checked]
    ) -> None:
        if not good:
            return
        connection.execute(
            insert(events),
            [
                {
                    "edge_id": self.edge_id,
                    "seq": offset + event.seq,
                    "kind": event.data.kind,
                    "at": event.at,
                    "data": event.data.model_dump(mode="json", exclude_none=True),
                    "received_at": self.now,
                }
                for event in good
                if event.data is not None
            ],
        )
        pending = PendingWrites()
        sessions = SessionWrites(self.edge_id, self.now, self.max_meter_samples)
        for event in good:
            assert event.data is not None and event.at is not None
            applying = Applying(
                connection,
                self.edge_id,
                offset + event.seq,
                event.at,
                pending,
                sessions,
                self.fleet_id,
            )
            apply_event(applying, event.data)
        pending.flush(connection)
        reported = {
            event.data.charger_id for event in good if isinstance(event.data, ConnectorStatus)
        }
        trim_status_history(connection, self.edge_id, reported, self.status_history)
        if any(event.data is not None and event.data.kind in COUNTED_KINDS for event in good):
            refresh_charger_counts(connection, self.edge_id)
        sessions.flush(connection)
        if any(event.data is not None and event.data.kind in CAMPAIGN_KINDS for event in good):
            self._follow_campaigns(connection, good)

    def _follow_campaigns(self, connection: Connection, good: Sequence[_Checked]) -> None:
        """Firmware campaigns move with the batch, in a savepoint: a campaign that cannot
        follow it is logged, and never holds back the edge's events."""
        moved = [
            (event.at, event.data)
            for event in good
            if event.at is not None and event.data is not None
        ]
        try:
            with connection.begin_nested():
                follow_batch(connection, self.edge_id, moved, self.now)
        except Exception:
            log.exception("edge %s: its firmware campaigns did not follow a batch", self.edge_id)

    def _put_aside(self, connection: Connection, offset: int, event: _Checked) -> None:
        raw = _raw_json(event.raw)
        connection.execute(
            insert(quarantined_events).values(
                edge_id=self.edge_id,
                seq=offset + event.seq,
                epoch=self.epoch,
                edge_seq=event.seq,
                kind=event.kind,
                at=event.at,
                reason=event.reason,
                detail=event.detail[:1000],
                raw=raw[: self.sample_bytes],
                raw_bytes=len(raw),
                received_at=self.now,
            )
        )


def record_status(
    engine: Engine,
    edge_id: str,
    payload: bytes,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    *,
    now: datetime | None = None,
    presence_history: int = PRESENCE_HISTORY_PER_EDGE,
) -> bool:
    """Take the `EdgeStatus` retained on `edge_id`'s status topic; False when refused.
    A change of presence is added to the edge's history (its newest `presence_history`
    changes are kept); the same state again (a status every minute, the retained one
    after the aggregator reconnects) changes nothing there."""
    now = now or utc_now()
    try:
        if not is_edge_id(edge_id):
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
    if status.backlog == 0:
        values["backlog_empty_at"] = now
    try:
        with engine.begin() as connection:
            edge = lock_edge(connection, edge_id, now)
            if edge.state != status.state:
                online = status.state == "online"
                record_change(connection, edge_id, online, now, presence_history)
                values["state_since"] = now
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
    source, sample = safe_text(source), safe_text(sample)
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
        # The web view's change marker: a known edge's refusals show live.
        connection.execute(
            update(edges).where(edges.c.id == source).values(revision=edges.c.revision + 1)
        )
        count_refusal_at(connection, source[:_SOURCE_LENGTH], now)


def _refuse(
    engine: Engine,
    source: str,
    payload: bytes,
    refused: PayloadRefused,
    ack_seq: int | None,
    now: datetime,
    epoch: str | None = None,
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
    return IngestResult(ack_seq, 0, 0, refused.reason, refused.detail, epoch=epoch)
