"""Tariffs and the costs they give sessions.

A tariff prices one site (`edge_id`), every site of a fleet (`fleet_id`: the fleet's
default) or every site of every fleet (both NULL: set through the API), from
`valid_from` until the next tariff of the same scope starts; for a session, the site's
own tariff in force wins, then its fleet's, then the one for every fleet. A session is
priced by the tariff in force at its start (`session_at`), once it has stopped: in the
transaction that stores its stop, and again whenever a tariff that covers it is added,
changed or removed. That change writes the tariff and a job on the re-pricing list
(cloud/store/repricing.py) in one short transaction; `reprice_batch` then prices the
job's sessions again a bounded batch per transaction, so that ingest never waits on
more than one batch. cloud/tariffs.py computes costs.

On PostgreSQL, a tariff change holds an advisory lock that batches with a stop, and
re-pricing batches, take shared before they touch a row: a stop is never priced by a
tariff a concurrent change is replacing, and a re-pricing batch never writes a cost of
tariffs replaced while it ran. A batch writes a cost only where the session's row still
holds what it priced (its energy, times and fleet): one that ingest changed meanwhile
was priced by ingest.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    delete,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)

from cloud.store.database import StoreError, reading
from cloud.store.repricing import EVERY_SESSION, job_of, queue_repricing
from cloud.store.schema import (
    EDGE_ID,
    UtcDateTime,
    edges,
    meter_samples,
    repricing,
    tariffs,
    transactions,
)
from cloud.store.statements import lock_edge
from cloud.store.times import utc_now
from cloud.tariffs import Band, CurvePoint, Tariff, TariffError, session_cost, session_curve
from contract.protocol import INT64_MAX, check_edge_id

_TARIFF_LOCK_KEY = 0x74617269  # "tari"
# Bounds on what a tariff may hold.
MAX_BANDS = 64
MAX_PRICE = 10_000 * 10**6  # 10,000 of the major unit per kWh, in millionths
# Sessions re-priced per transaction unless told otherwise (sessions.reprice_batch).
DEFAULT_BATCH = 500
MAX_BATCH = 100_000


class TariffRefused(StoreError):
    """A tariff the store will not take as given; the message says why."""


class UnknownTariff(StoreError):
    pass


@dataclass(frozen=True)
class TariffSpec:
    """A tariff as an operator sets it (prices in millionths of the major unit per kWh).
    Its scope: one site (`edge_id`), a fleet's sites (`fleet_id`), or every site (neither)."""

    name: str
    currency: str
    valid_from: datetime
    price: int
    edge_id: str | None = None
    minor_unit_digits: int = 2
    time_zone: str = "UTC"
    bands: tuple[Band, ...] = ()
    fleet_id: int | None = None
    valid_until: datetime | None = None  # ended: from then on the next scope's prices

    def in_force(self, moment: datetime) -> bool:
        """Whether it prices `moment`, if no later tariff of its scope started by then."""
        return self.valid_from <= moment and (self.valid_until is None or moment < self.valid_until)

    def checked(self) -> Tariff:
        """The tariff to price with; TariffRefused with the reason when it is not one."""
        if self.edge_id is not None:
            check_edge_id(self.edge_id)
            if self.fleet_id is not None:
                raise TariffRefused(
                    "a site's tariff follows its edge's fleet: give a site or a fleet"
                )
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise TariffRefused(f"currency {self.currency!r}: three capital letters (ISO 4217)")
        if not 1 <= len(self.name) <= 200:
            raise TariffRefused("a tariff's name is 1 to 200 characters")
        if self.valid_from.tzinfo is None:
            raise TariffRefused("valid_from needs a time zone (e.g. 2026-04-01T00:00:00Z)")
        if self.valid_until is not None:
            if self.valid_until.tzinfo is None:
                raise TariffRefused("valid_until needs a time zone (e.g. 2026-05-01T00:00:00Z)")
            if self.valid_until <= self.valid_from:
                raise TariffRefused("a tariff ends after it starts: valid_until > valid_from")
        if self.price <= 0 or any(band.price <= 0 for band in self.bands):
            raise TariffRefused("a price per kWh is more than 0")
        if len(self.bands) > MAX_BANDS:
            raise TariffRefused(f"at most {MAX_BANDS} bands")
        if self.price > MAX_PRICE or any(band.price > MAX_PRICE for band in self.bands):
            raise TariffRefused(f"a price is at most {MAX_PRICE // 10**6} per kWh")
        try:
            tariff = Tariff(
                self.price, self.bands, self.time_zone, self.minor_unit_digits, self.currency
            )
            tariff.week  # noqa: B018 - refuses overlapping bands now
        except TariffError as error:
            raise TariffRefused(str(error)) from error
        return tariff


@dataclass(frozen=True)
class TariffRecord:
    id: int
    spec: TariffSpec
    created_at: datetime
    updated_at: datetime

    @cached_property
    def tariff(self) -> Tariff:
        """The tariff to price with (made once: its week of prices is built once)."""
        spec = self.spec
        return Tariff(spec.price, spec.bands, spec.time_zone, spec.minor_unit_digits, spec.currency)


@dataclass(frozen=True)
class TariffChange:
    tariff: TariffRecord | None  # None once removed
    # The re-pricing jobs the change queued (cloud/store/repricing.py): its sessions are
    # priced again in the background (none: no stopped session in its scope and time).
    jobs: tuple[int, ...]


def list_tariffs(
    engine: Engine, edge_id: str | None = None, fleet_id: int | None = None
) -> list[TariffRecord]:
    """Tariffs by scope then start: every one; with `edge_id`, those that may price that
    site (its own, its fleet's, every fleet's); with `fleet_id`, those that may price the
    fleet's sites (theirs, the fleet's, every fleet's)."""
    query = select(tariffs).order_by(
        tariffs.c.edge_id, tariffs.c.fleet_id, tariffs.c.valid_from, tariffs.c.id
    )
    everywhere = and_(tariffs.c.edge_id.is_(None), tariffs.c.fleet_id.is_(None))
    if edge_id is not None:
        edge_fleet = select(edges.c.fleet_id).where(edges.c.id == edge_id).scalar_subquery()
        query = query.where(
            or_(
                tariffs.c.edge_id == edge_id,
                and_(tariffs.c.edge_id.is_(None), tariffs.c.fleet_id == edge_fleet),
                everywhere,
            )
        )
    if fleet_id is not None:
        fleet_edges = select(edges.c.id).where(edges.c.fleet_id == fleet_id)
        query = query.where(
            or_(
                tariffs.c.edge_id.in_(fleet_edges),
                and_(tariffs.c.edge_id.is_(None), tariffs.c.fleet_id == fleet_id),
                everywhere,
            )
        )
    with reading(engine) as connection:
        return [_record(row) for row in connection.execute(query)]


def get_tariff(engine: Engine, tariff_id: int, fleet_id: int | None = None) -> TariffRecord:
    """The tariff; with `fleet_id`, only one that fleet may change (UnknownTariff else)."""
    with reading(engine) as connection:
        record = _get(connection, tariff_id)
        _check_fleet(connection, record.spec, fleet_id)
        return record


def create_tariff(engine: Engine, spec: TariffSpec, fleet_id: int | None = None) -> TariffChange:
    """Add a tariff (with `fleet_id`: only one of that fleet's scope) and queue the
    re-pricing of the sessions it covers."""
    spec.checked()
    now = utc_now()
    with engine.begin() as connection:
        _lock_tariffs(connection)
        # Held to a fleet, only a site it has (none is made for a tariff of its own).
        _check_fleet(connection, spec, fleet_id)
        if spec.edge_id is not None:
            lock_edge(connection, spec.edge_id, now)
        _refuse_same_start(connection, spec, None)
        tariff_id = connection.execute(
            insert(tariffs).values(**_columns(spec), created_at=now, updated_at=now)
        ).inserted_primary_key
        assert tariff_id is not None
        record = _get(connection, int(tariff_id[0]))
        jobs = _queue(connection, spec, spec.valid_from, f"tariff {record.id} added")
        return TariffChange(record, jobs)


def update_tariff(
    engine: Engine,
    tariff_id: int,
    spec: TariffSpec,
    fleet_id: int | None = None,
    verb: str = "changed",
) -> TariffChange:
    """Change a tariff (with `fleet_id`: one of that fleet's, staying so) and queue the
    re-pricing of the sessions it covered and covers."""
    spec.checked()
    now = utc_now()
    with engine.begin() as connection:
        _lock_tariffs(connection)
        before = _get(connection, tariff_id)
        _check_fleet(connection, before.spec, fleet_id)
        _check_fleet(connection, spec, fleet_id)
        if spec.edge_id is not None:
            lock_edge(connection, spec.edge_id, now)
        _refuse_same_start(connection, spec, tariff_id)
        connection.execute(
            update(tariffs)
            .where(tariffs.c.id == tariff_id)
            .values(**_columns(spec), updated_at=now)
        )
        since = _changed_from(before.spec, spec)
        reason = f"tariff {tariff_id} {verb}"
        jobs = _queue(connection, before.spec, since, reason)
        if (spec.edge_id, spec.fleet_id) != (before.spec.edge_id, before.spec.fleet_id):
            jobs += _queue(connection, spec, since, reason)
        return TariffChange(_get(connection, tariff_id), jobs)


def end_tariff(
    engine: Engine, tariff_id: int, until: datetime, fleet_id: int | None = None
) -> TariffChange:
    """End a tariff at `until` (with `fleet_id`: one of that fleet's): from then on its
    scope is priced by the next scope's tariffs, until a later one of its own starts."""
    with reading(engine) as connection:
        before = _get(connection, tariff_id)
    spec = replace(before.spec, valid_until=until)
    return update_tariff(engine, tariff_id, spec, fleet_id, verb="ended")


def _changed_from(before: TariffSpec, after: TariffSpec) -> datetime:
    """The earliest session start whose price the change may move: the earlier start,
    or, when only the end moved, the earlier end."""
    if replace(before, valid_until=None) == replace(after, valid_until=None):
        ends = [end for end in (before.valid_until, after.valid_until) if end is not None]
        if ends:
            return min(ends)
    return min(before.valid_from, after.valid_from)


def delete_tariff(engine: Engine, tariff_id: int, fleet_id: int | None = None) -> TariffChange:
    """Remove a tariff (with `fleet_id`: one of that fleet's) and queue the re-pricing of
    the sessions it covered."""
    with engine.begin() as connection:
        _lock_tariffs(connection)
        before = _get(connection, tariff_id)
        _check_fleet(connection, before.spec, fleet_id)
        # The sessions it priced have no cost until the job reaches them (shown as being
        # recalculated): the currency it was in goes with the tariff.
        connection.execute(
            update(transactions)
            .where(transactions.c.tariff_id == tariff_id)
            .values(tariff_id=None, cost_minor=None)
        )
        connection.execute(delete(tariffs).where(tariffs.c.id == tariff_id))
        jobs = _queue(
            connection, before.spec, before.spec.valid_from, f"tariff {tariff_id} removed"
        )
        return TariffChange(None, jobs)


def edge_moved(connection: Connection, edge_id: str, fleet_id: int) -> int | None:
    """The edge (its row locked) now belongs to `fleet_id`: its sessions follow it, and
    are priced again by that fleet's tariffs; the re-pricing job's id (None: no session)."""
    connection.execute(
        update(transactions).where(transactions.c.edge_id == edge_id).values(fleet_id=fleet_id)
    )
    return queue_repricing(
        connection,
        since=EVERY_SESSION,
        reason=f"edge {edge_id} moved to fleet {fleet_id}",
        edge_id=edge_id,
    )


def hold_tariffs(connection: Connection) -> None:
    """Keep tariffs as they are until this transaction ends (PostgreSQL: a shared lock;
    SQLite's writers already take turns)."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": _TARIFF_LOCK_KEY}
        )


def lock_tariffs(connection: Connection) -> None:
    """Hold tariffs for a change until this transaction ends (PostgreSQL: the exclusive
    lock that stops and re-pricing batches wait for; SQLite's writers take turns)."""
    _lock_tariffs(connection)


def price_sessions(connection: Connection, edge_id: str, transaction_ids: Iterable[int]) -> None:
    """Compute and store the cost of these stopped sessions of `edge_id`."""
    ids = sorted(set(transaction_ids))
    if not ids:
        return
    in_force = _TariffsInForce(connection)
    rows = connection.execute(
        select(*_PRICING_COLUMNS).where(
            transactions.c.edge_id == edge_id,
            transactions.c.transaction_id.in_(ids),
            transactions.c.stopped_at.is_not(None),
        )
    ).all()
    _store_costs(connection, in_force, rows)


_PRICING_COLUMNS = (
    transactions.c.edge_id,
    transactions.c.transaction_id,
    transactions.c.fleet_id,
    transactions.c.session_at,
    transactions.c.started_at,
    transactions.c.stopped_at,
    transactions.c.energy_wh,
)


# -- re-pricing in the background ----------------------------------------------------


@dataclass(frozen=True)
class RepricedBatch:
    job_id: int
    sessions: int  # stopped sessions priced again
    finished: bool  # the job is done (and gone)


def reprice_batch(engine: Engine, size: int = DEFAULT_BATCH) -> RepricedBatch | None:
    """Price again the next `size` sessions of the oldest re-pricing job, in one
    transaction that also moves the job on (or ends it); None when there is no work. On
    PostgreSQL, a job another replica is working on is left to it."""
    size = max(1, min(size, MAX_BATCH))
    with engine.begin() as connection:
        hold_tariffs(connection)
        row = connection.execute(
            select(repricing).order_by(repricing.c.id).limit(1).with_for_update(skip_locked=True)
        ).first()
        if row is None:
            return None
        job = job_of(row)
        rows = connection.execute(_next_sessions(job, size)).all()
        done = _store_costs(connection, _TariffsInForce(connection), rows, guarded=True)
        if len(rows) < size:
            connection.execute(delete(repricing).where(repricing.c.id == job.id))
            return RepricedBatch(job.id, len(rows), True)
        last = rows[-1]
        connection.execute(
            update(repricing)
            .where(repricing.c.id == job.id)
            .values(
                after_session_at=last.session_at,
                after_edge_id=last.edge_id,
                after_transaction_id=last.transaction_id,
                repriced=repricing.c.repriced + done,
                updated_at=utc_now(),
            )
        )
        return RepricedBatch(job.id, len(rows), False)


def reprice_all(engine: Engine, size: int = DEFAULT_BATCH) -> int:
    """Work through every re-pricing job now (tests, `ocpp-cloud`): sessions priced."""
    total = 0
    while (batch := reprice_batch(engine, size)) is not None:
        total += batch.sessions
    return total


def _next_sessions(job: Any, size: int) -> Any:
    """The job's next stopped sessions after its last one, in (session_at, edge_id,
    transaction_id) order, on the index of its scope."""
    t = transactions.c
    query = select(*_PRICING_COLUMNS).where(t.stopped_at.is_not(None))
    if job.edge_id is not None:
        query = query.where(t.edge_id == job.edge_id)
    elif job.fleet_id is not None:
        query = query.where(t.fleet_id == job.fleet_id)
    if job.after is None:
        query = query.where(t.session_at >= job.since)
    else:
        # The cursor alone bounds the range (it is past `since`): with both, SQLite reads
        # the index from `since` and checks each entry up to the cursor, every batch.
        session_at, edge_id, transaction_id = job.after
        moment = literal(session_at, UtcDateTime())
        if job.edge_id is not None:
            # The site is fixed: compare on the columns that follow it in its index.
            query = query.where(
                tuple_(t.session_at, t.transaction_id)
                > tuple_(moment, literal(transaction_id, BigInteger()))
            )
        else:
            query = query.where(
                tuple_(t.session_at, t.edge_id, t.transaction_id)
                > tuple_(moment, literal(edge_id, EDGE_ID), literal(transaction_id, BigInteger()))
            )
    return query.order_by(t.session_at, t.edge_id, t.transaction_id).limit(size)


def _store_costs(
    connection: Connection,
    in_force: _TariffsInForce,
    rows: Sequence[Any],
    *,
    guarded: bool = False,
) -> int:
    """Price `rows` and store their costs; with `guarded`, only where the row still holds
    what was priced (a stop or a move stored meanwhile priced it itself)."""
    chosen = [(row, in_force.at(row.edge_id, row.fleet_id, row.session_at)) for row in rows]
    banded = [row for row, record in chosen if record is not None and record.spec.bands]
    samples = _samples(connection, banded)
    changes = []
    for row, record in chosen:
        cost = None
        if record is not None:
            curve = session_curve(
                row.started_at,
                row.stopped_at,
                int(row.energy_wh),
                samples.get((row.edge_id, row.transaction_id), ()),
            )
            cost = session_cost(record.tariff, curve)
            if cost > INT64_MAX:  # energy no meter delivers: left unpriced
                cost = None
        change = {
            "key_edge": row.edge_id,
            "key_transaction": row.transaction_id,
            "cost_minor": cost,
            "tariff_id": record.id if record is not None else None,
        }
        if guarded:
            change |= {
                "was_energy": row.energy_wh,
                "was_stopped": row.stopped_at,
                "was_started": row.started_at,
                "was_session_at": row.session_at,
                "was_fleet": row.fleet_id,
            }
        changes.append(change)
    if changes:
        connection.execute(_GUARDED_COSTS if guarded else _COSTS, changes)
    return len(changes)


_KEY = (
    transactions.c.edge_id == bindparam("key_edge"),
    transactions.c.transaction_id == bindparam("key_transaction"),
)
_COSTS = (
    update(transactions)
    .where(*_KEY)
    .values(cost_minor=bindparam("cost_minor"), tariff_id=bindparam("tariff_id"))
)
_GUARDED_COSTS = _COSTS.where(
    transactions.c.energy_wh == bindparam("was_energy", type_=BigInteger()),
    transactions.c.stopped_at == bindparam("was_stopped", type_=UtcDateTime()),
    transactions.c.started_at.is_not_distinct_from(bindparam("was_started", type_=UtcDateTime())),
    transactions.c.session_at == bindparam("was_session_at", type_=UtcDateTime()),
    transactions.c.fleet_id.is_not_distinct_from(bindparam("was_fleet", type_=Integer())),
)


def _samples(
    connection: Connection, rows: Sequence[Any]
) -> Mapping[tuple[str, int], list[CurvePoint]]:
    by_edge: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_edge[row.edge_id].append(row.transaction_id)
    found: dict[tuple[str, int], list[CurvePoint]] = defaultdict(list)
    for edge_id, ids in by_edge.items():
        result = connection.execute(
            select(meter_samples.c.transaction_id, meter_samples.c.at, meter_samples.c.energy_wh)
            .where(meter_samples.c.edge_id == edge_id, meter_samples.c.transaction_id.in_(ids))
            .order_by(meter_samples.c.transaction_id, meter_samples.c.at)
        )
        for sample in result:
            point = CurvePoint(sample.at, int(sample.energy_wh))
            found[(edge_id, sample.transaction_id)].append(point)
    return found


Scope = tuple[str, str | int | None]  # ("edge", id), ("fleet", id), ("every", None)


def _scope_of(spec: TariffSpec) -> Scope:
    if spec.edge_id is not None:
        return ("edge", spec.edge_id)
    if spec.fleet_id is not None:
        return ("fleet", spec.fleet_id)
    return ("every", None)


class _TariffsInForce:
    """Every tariff, to find the one in force for a site at a time."""

    def __init__(self, connection: Connection) -> None:
        records = [_record(row) for row in connection.execute(select(tariffs))]
        self._by_scope: dict[Scope, list[TariffRecord]] = defaultdict(list)
        for record in sorted(records, key=lambda record: record.spec.valid_from, reverse=True):
            self._by_scope[_scope_of(record.spec)].append(record)

    def at(self, edge_id: str, fleet_id: int | None, moment: datetime) -> TariffRecord | None:
        scopes: list[Scope] = [("edge", edge_id)]
        if fleet_id is not None:
            scopes.append(("fleet", fleet_id))
        scopes.append(("every", None))
        for scope in scopes:
            for record in self._by_scope.get(scope, ()):
                if record.spec.valid_from <= moment:
                    # The scope's latest start by then; ended, the next scope prices.
                    if record.spec.in_force(moment):
                        return record
                    break
        return None


def _queue(
    connection: Connection, spec: TariffSpec, since: datetime, reason: str
) -> tuple[int, ...]:
    job = queue_repricing(
        connection, since=since, reason=reason, fleet_id=spec.fleet_id, edge_id=spec.edge_id
    )
    return () if job is None else (job,)


def _lock_tariffs(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _TARIFF_LOCK_KEY})


def _check_fleet(connection: Connection, spec: TariffSpec, fleet_id: int | None) -> None:
    """With `fleet_id`: the tariff's scope must be that fleet's (a site of it, or its
    default); a tariff of another fleet, or of every fleet, is none of its own."""
    if fleet_id is None:
        return
    if spec.edge_id is not None:
        edge_fleet = connection.execute(
            select(edges.c.fleet_id).where(edges.c.id == spec.edge_id)
        ).scalar()
        if edge_fleet == fleet_id:
            return
    elif spec.fleet_id == fleet_id:
        return
    raise UnknownTariff("no such tariff in this fleet")


def _refuse_same_start(connection: Connection, spec: TariffSpec, tariff_id: int | None) -> None:
    if spec.edge_id is not None:
        scope = tariffs.c.edge_id == spec.edge_id
    elif spec.fleet_id is not None:
        scope = and_(tariffs.c.edge_id.is_(None), tariffs.c.fleet_id == spec.fleet_id)
    else:
        scope = and_(tariffs.c.edge_id.is_(None), tariffs.c.fleet_id.is_(None))
    query = select(tariffs.c.id).where(and_(scope, tariffs.c.valid_from == spec.valid_from))
    if tariff_id is not None:
        query = query.where(tariffs.c.id != tariff_id)
    other = connection.execute(query).scalar()
    if other is not None:
        raise TariffRefused(
            f"tariff {other} of the same scope starts at the same time: change that one"
        )


def _get(connection: Connection, tariff_id: int) -> TariffRecord:
    row = connection.execute(select(tariffs).where(tariffs.c.id == tariff_id)).one_or_none()
    if row is None:
        raise UnknownTariff(f"no tariff {tariff_id}")
    return _record(row)


def _columns(spec: TariffSpec) -> dict[str, Any]:
    return {
        "edge_id": spec.edge_id,
        "fleet_id": spec.fleet_id,
        "name": spec.name,
        "currency": spec.currency,
        "minor_unit_digits": spec.minor_unit_digits,
        "time_zone": spec.time_zone,
        "valid_from": spec.valid_from,
        "valid_until": spec.valid_until,
        "price": spec.price,
        "bands": [
            {
                "days": sorted(band.days),
                "start": band.start_minute,
                "end": band.end_minute,
                "price": band.price,
            }
            for band in spec.bands
        ],
    }


def _record(row: Any) -> TariffRecord:
    bands = tuple(
        Band(frozenset(band["days"]), band["start"], band["end"], band["price"])
        for band in row.bands
    )
    spec = TariffSpec(
        name=row.name,
        currency=row.currency,
        valid_from=row.valid_from,
        price=int(row.price),
        edge_id=row.edge_id,
        minor_unit_digits=row.minor_unit_digits,
        time_zone=row.time_zone,
        bands=bands,
        fleet_id=row.fleet_id,
        valid_until=row.valid_until,
    )
    return TariffRecord(row.id, spec, row.created_at, row.updated_at)
