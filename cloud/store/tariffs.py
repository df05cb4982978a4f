"""Tariffs and the costs they give sessions.

A tariff prices every site (`edge_id` NULL) or one site, from `valid_from` until the
next tariff of the same scope starts; a site's own tariff in force wins over the one for
every site. A session is priced by the tariff in force at its start (`session_at`), once
it has stopped: in the transaction that stores its stop, and again whenever a tariff that
covers it is added, changed or removed (in the transaction that changes the tariff), so
a stored cost always follows the tariffs as they stand. cloud/tariffs.py computes costs.

On PostgreSQL, a tariff change holds an advisory lock that batches with a stop take
shared before they touch a row: a stop is never priced by a tariff a concurrent change
is replacing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
)

from cloud.store.database import StoreError, reading
from cloud.store.schema import meter_samples, tariffs, transactions
from cloud.store.statements import lock_edge
from cloud.store.times import utc_now
from cloud.tariffs import Band, CurvePoint, Tariff, TariffError, session_cost, session_curve
from contract.protocol import INT64_MAX, check_edge_id

_TARIFF_LOCK_KEY = 0x74617269  # "tari"
# Bounds on what a tariff may hold.
MAX_BANDS = 64
MAX_PRICE = 10_000 * 10**6  # 10,000 of the major unit per kWh, in millionths
# Sessions re-priced per round trip.
_CHUNK = 1000


class TariffRefused(StoreError):
    """A tariff the store will not take as given; the message says why."""


class UnknownTariff(StoreError):
    pass


@dataclass(frozen=True)
class TariffSpec:
    """A tariff as an operator sets it (prices in millionths of the major unit per kWh)."""

    name: str
    currency: str
    valid_from: datetime
    price: int
    edge_id: str | None = None
    minor_unit_digits: int = 2
    time_zone: str = "UTC"
    bands: tuple[Band, ...] = ()

    def checked(self) -> Tariff:
        """The tariff to price with; TariffRefused with the reason when it is not one."""
        if self.edge_id is not None:
            check_edge_id(self.edge_id)
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise TariffRefused(f"currency {self.currency!r}: three capital letters (ISO 4217)")
        if not 1 <= len(self.name) <= 200:
            raise TariffRefused("a tariff's name is 1 to 200 characters")
        if self.valid_from.tzinfo is None:
            raise TariffRefused("valid_from needs a time zone (e.g. 2026-04-01T00:00:00Z)")
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
    repriced: int  # sessions whose cost was computed again


def list_tariffs(engine: Engine, edge_id: str | None = None) -> list[TariffRecord]:
    """Every tariff (of one site and those for every site, when `edge_id` is given), by
    scope then start."""
    query = select(tariffs).order_by(tariffs.c.edge_id, tariffs.c.valid_from, tariffs.c.id)
    if edge_id is not None:
        query = query.where((tariffs.c.edge_id == edge_id) | tariffs.c.edge_id.is_(None))
    with reading(engine) as connection:
        return [_record(row) for row in connection.execute(query)]


def get_tariff(engine: Engine, tariff_id: int) -> TariffRecord:
    with reading(engine) as connection:
        return _get(connection, tariff_id)


def create_tariff(engine: Engine, spec: TariffSpec) -> TariffChange:
    spec.checked()
    now = utc_now()
    with engine.begin() as connection:
        _lock_tariffs(connection)
        if spec.edge_id is not None:
            lock_edge(connection, spec.edge_id, now)
        _refuse_same_start(connection, spec, None)
        tariff_id = connection.execute(
            insert(tariffs).values(**_columns(spec), created_at=now, updated_at=now)
        ).inserted_primary_key
        assert tariff_id is not None
        repriced = _reprice(connection, spec.edge_id, spec.valid_from)
        return TariffChange(_get(connection, int(tariff_id[0])), repriced)


def update_tariff(engine: Engine, tariff_id: int, spec: TariffSpec) -> TariffChange:
    spec.checked()
    now = utc_now()
    with engine.begin() as connection:
        _lock_tariffs(connection)
        before = _get(connection, tariff_id)
        if spec.edge_id is not None:
            lock_edge(connection, spec.edge_id, now)
        _refuse_same_start(connection, spec, tariff_id)
        connection.execute(
            update(tariffs)
            .where(tariffs.c.id == tariff_id)
            .values(**_columns(spec), updated_at=now)
        )
        since = min(before.spec.valid_from, spec.valid_from)
        repriced = _reprice(connection, before.spec.edge_id, since)
        if spec.edge_id != before.spec.edge_id:
            repriced += _reprice(connection, spec.edge_id, since)
        return TariffChange(_get(connection, tariff_id), repriced)


def delete_tariff(engine: Engine, tariff_id: int) -> TariffChange:
    with engine.begin() as connection:
        _lock_tariffs(connection)
        before = _get(connection, tariff_id)
        connection.execute(
            update(transactions).where(transactions.c.tariff_id == tariff_id).values(tariff_id=None)
        )
        connection.execute(delete(tariffs).where(tariffs.c.id == tariff_id))
        return TariffChange(None, _reprice(connection, before.spec.edge_id, before.spec.valid_from))


def hold_tariffs(connection: Connection) -> None:
    """Keep tariffs as they are until this transaction ends (PostgreSQL: a shared lock;
    SQLite's writers already take turns)."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": _TARIFF_LOCK_KEY}
        )


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
    transactions.c.session_at,
    transactions.c.started_at,
    transactions.c.stopped_at,
    transactions.c.energy_wh,
)


def _reprice(connection: Connection, edge_id: str | None, since: datetime) -> int:
    """Price again every stopped session from `since` on, of `edge_id` (None: all), a
    chunk at a time."""
    in_force = _TariffsInForce(connection)
    query = (
        select(*_PRICING_COLUMNS)
        .where(transactions.c.session_at >= since, transactions.c.stopped_at.is_not(None))
        .order_by(transactions.c.edge_id, transactions.c.transaction_id)
        .limit(_CHUNK)
    )
    if edge_id is not None:
        query = query.where(transactions.c.edge_id == edge_id)
    total = 0
    after: tuple[str, int] | None = None
    while True:
        page = query
        if after is not None:
            key = tuple_(transactions.c.edge_id, transactions.c.transaction_id)
            page = page.where(key > tuple_(literal(after[0]), literal(after[1])))
        rows = connection.execute(page).all()
        total += _store_costs(connection, in_force, rows)
        if len(rows) < _CHUNK:
            return total
        after = (rows[-1].edge_id, rows[-1].transaction_id)


def _store_costs(connection: Connection, in_force: _TariffsInForce, rows: Sequence[Any]) -> int:
    chosen = [(row, in_force.at(row.edge_id, row.session_at)) for row in rows]
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
        changes.append(
            {
                "key_edge": row.edge_id,
                "key_transaction": row.transaction_id,
                "cost_minor": cost,
                "tariff_id": record.id if record is not None else None,
            }
        )
    if changes:
        connection.execute(
            update(transactions)
            .where(
                transactions.c.edge_id == bindparam("key_edge"),
                transactions.c.transaction_id == bindparam("key_transaction"),
            )
            .values(cost_minor=bindparam("cost_minor"), tariff_id=bindparam("tariff_id")),
            changes,
        )
    return len(changes)


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


class _TariffsInForce:
    """Every tariff, to find the one in force for a site at a time."""

    def __init__(self, connection: Connection) -> None:
        records = [_record(row) for row in connection.execute(select(tariffs))]
        self._by_scope: dict[str | None, list[TariffRecord]] = defaultdict(list)
        for record in sorted(records, key=lambda record: record.spec.valid_from, reverse=True):
            self._by_scope[record.spec.edge_id].append(record)

    def at(self, edge_id: str, moment: datetime) -> TariffRecord | None:
        for scope in (edge_id, None):
            for record in self._by_scope.get(scope, ()):
                if record.spec.valid_from <= moment:
                    return record
        return None


def _lock_tariffs(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _TARIFF_LOCK_KEY})


def _refuse_same_start(connection: Connection, spec: TariffSpec, tariff_id: int | None) -> None:
    scope = (
        tariffs.c.edge_id.is_(None) if spec.edge_id is None else tariffs.c.edge_id == spec.edge_id
    )
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
        "name": spec.name,
        "currency": spec.currency,
        "minor_unit_digits": spec.minor_unit_digits,
        "time_zone": spec.time_zone,
        "valid_from": spec.valid_from,
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
    )
    return TariffRecord(row.id, spec, row.created_at, row.updated_at)
