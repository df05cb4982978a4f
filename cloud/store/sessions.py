"""Charging sessions as a fleet manager reads them: filtered (fleet, site, charger, card,
account, period), newest first a page at a time, with energy, duration, cost and whether
they were recorded offline; sums per card, account and month; each session's meter
curve; and whether a site's month is final.

Pages use keyset pagination on (session_at, edge_id, transaction_id), newest first: a
cursor names the last session shown and the next page starts after it, through an
index, so that page 10,000 costs what page 1 does and a session synced meanwhile never
shifts a page (it appears in its place when the list is read again).

A month is *final* for a site once the edge's data reaches past the month's end (an event
that happened after it is stored), the edge has reported an empty backlog after it (all
it had recorded until then had reached the cloud; a backlog later is of later events),
and no session of the month is still running; *provisional* otherwise, with the reasons.
Months are calendar months in `sessions.time_zone`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, Select, func, literal, select, tuple_

from cloud.store.database import StoreError, reading
from cloud.store.repricing import RepricingJob, jobs_in
from cloud.store.schema import UtcDateTime, edges, meter_samples, tariffs, transactions
from cloud.store.times import iso
from cloud.tariffs import format_cost
from contract.protocol import INT64_MAX, INT64_MIN

MAX_PAGE = 1000


class InvalidCursor(ValueError):
    """A cursor this store never handed out."""


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions: every field set narrows the list (None: no condition). `since`
    and `until` bound the session's start (`since` <= start < `until`)."""

    fleet_id: int | None = None
    edge_id: str | None = None
    charger_id: str | None = None
    id_tag: str | None = None
    account: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last session it showed."""

    session_at: datetime
    edge_id: str
    transaction_id: int

    def text(self) -> str:
        document = json.dumps([iso(self.session_at), self.edge_id, self.transaction_id])
        return base64.urlsafe_b64encode(document.encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, text: str) -> Cursor:
        try:
            padded = text + "=" * (-len(text) % 4)
            session_at, edge_id, transaction_id = json.loads(base64.urlsafe_b64decode(padded))
            moment = datetime.fromisoformat(session_at)
        except (ValueError, TypeError, binascii.Error) as error:
            raise InvalidCursor(f"{text[:80]!r} is not a cursor this API gave") from error
        valid = (
            isinstance(edge_id, str)
            and len(edge_id) <= 64
            and isinstance(transaction_id, int)
            and INT64_MIN <= transaction_id <= INT64_MAX
            and moment.tzinfo is not None
        )
        if not valid:
            raise InvalidCursor(f"{text[:80]!r} is not a cursor this API gave")
        return cls(moment, edge_id, transaction_id)


@dataclass(frozen=True)
class Session:
    edge_id: str
    transaction_id: int
    charger_id: str
    connector_id: int | None
    id_tag: str | None
    id_tag_status: str | None
    account: str | None  # the card's parent idTag
    session_at: datetime  # its start, else the first of its events the cloud heard of
    started_at: datetime | None
    stopped_at: datetime | None
    meter_start_wh: int | None
    meter_stop_wh: int | None
    energy_wh: int
    power_w: float | None
    stop_reason: str | None
    synced_at: datetime | None  # when its latest event reached the cloud
    sync_delay_s: float | None  # the longest any of its events took to arrive
    cost_minor: int | None  # once stopped and priced, in the currency's minor unit
    tariff_id: int | None
    tariff_name: str | None
    currency: str | None
    minor_unit_digits: int | None
    fleet_id: int | None  # its edge's fleet

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.session_at, self.edge_id, self.transaction_id)

    def duration_s(self, now: datetime) -> float | None:
        """Seconds from start to stop (to `now` while running); None without a start."""
        if self.started_at is None:
            return None
        return max(((self.stopped_at or now) - self.started_at).total_seconds(), 0.0)

    def recorded_offline(self, after_s: float) -> bool | None:
        """Whether an event of it reached the cloud more than `after_s` seconds after it
        happened (the site was offline); None: stored before delays were kept."""
        return None if self.sync_delay_s is None else self.sync_delay_s > after_s

    @property
    def cost(self) -> str | None:
        """The cost in the major unit ("12.34")."""
        if self.cost_minor is None or self.minor_unit_digits is None:
            return None
        return format_cost(self.cost_minor, self.minor_unit_digits)


@dataclass(frozen=True)
class Repricing:
    """The re-pricing under way (cloud/store/repricing.py) that may touch the sessions a
    query selects: which of them wait for their cost to be computed again, and from
    when on their months do."""

    jobs: tuple[RepricingJob, ...] = ()

    def waiting(self, session: Session) -> bool:
        """Whether the session's cost is still to be computed again."""
        return any(
            job.waiting(
                session.edge_id,
                session.fleet_id,
                session.session_at,
                session.transaction_id,
                not session.running,
            )
            for job in self.jobs
        )

    @property
    def waiting_from(self) -> datetime | None:
        """Sessions that started at or after this may wait (None: none waits)."""
        return min((job.waiting_from for job in self.jobs), default=None)

    def before(self, until: datetime | None) -> bool:
        """Whether sessions that started before `until` (None: ever) may still wait."""
        start = self.waiting_from
        return start is not None and (until is None or start < until)

    def month(self, month: Month, zone: ZoneInfo) -> bool:
        """Whether the month's costs are not all computed again yet."""
        start = self.waiting_from
        return start is not None and start < month.end(zone)


@dataclass(frozen=True)
class SessionPage:
    sessions: list[Session]
    next_cursor: Cursor | None  # None: this was the last page
    # Read with the page (one snapshot): which of its sessions wait to be re-priced.
    repricing: Repricing = field(default_factory=Repricing)


@dataclass(frozen=True)
class MeterSample:
    at: datetime
    meter_wh: int
    energy_wh: int
    power_w: float | None


@dataclass(frozen=True)
class SessionSum:
    key: str | None  # the card, account or month ("2026-03"); None: sessions without one
    sessions: int = 0
    energy_wh: int = 0
    running: int = 0
    unpriced: int = 0  # stopped without a cost (no tariff covered it)
    costs: dict[str, int] = field(default_factory=dict)  # currency -> minor units


@dataclass(frozen=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        try:
            year, month = (int(part) for part in text.split("-"))
            if not (len(text) == 7 and 1 <= month <= 12 and 1970 <= year <= 9998):
                raise ValueError
        except ValueError as error:
            raise ValueError(f"{text[:20]!r} is not a month: YYYY-MM, e.g. 2026-03") from error
        return cls(year, month)

    @classmethod
    def of(cls, moment: datetime, zone: ZoneInfo) -> Month:
        local = moment.astimezone(zone)
        return cls(local.year, local.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def start(self, zone: ZoneInfo) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=zone)

    def end(self, zone: ZoneInfo) -> datetime:
        return self.next().start(zone)


@dataclass(frozen=True)
class MonthClosing:
    """One site's month: final, or provisional and why."""

    edge_id: str
    month: Month
    start: datetime
    end: datetime
    final: bool
    reasons: list[str]
    sums: SessionSum


# -- sessions -----------------------------------------------------------------------


def session_page(
    engine: Engine, query: SessionFilter, limit: int = 50, after: Cursor | None = None
) -> SessionPage:
    """Up to `limit` sessions, newest first, after the cursor `after` (None: the newest)."""
    limit = max(1, min(limit, MAX_PAGE))
    with reading(engine) as connection:
        rows = connection.execute(_page_query(query, after, limit + 1)).all()
        repricing = _repricing(connection, query)
    sessions = [_session(row) for row in rows[:limit]]
    more = len(rows) > limit
    return SessionPage(sessions, sessions[-1].cursor if more and sessions else None, repricing)


def all_sessions(engine: Engine, query: SessionFilter, chunk: int = MAX_PAGE) -> Iterator[Session]:
    """Every session `query` selects, newest first, read a page at a time (a CSV export:
    memory stays one page whatever the number)."""
    for session, _ in marked_sessions(engine, query, chunk):
        yield session


def marked_sessions(
    engine: Engine, query: SessionFilter, chunk: int = MAX_PAGE
) -> Iterator[tuple[Session, bool]]:
    """As all_sessions, each with whether its cost waits to be computed again (as of
    its page's reading)."""
    after: Cursor | None = None
    while True:
        page = session_page(engine, query, chunk, after)
        for session in page.sessions:
            yield session, page.repricing.waiting(session)
        if page.next_cursor is None:
            return
        after = page.next_cursor


def repricing_of(engine: Engine, query: SessionFilter) -> Repricing:
    """The re-pricing under way that may touch what `query` selects."""
    with reading(engine) as connection:
        return _repricing(connection, query)


def _repricing(connection: Connection, query: SessionFilter) -> Repricing:
    jobs = jobs_in(connection)
    if not jobs:
        return Repricing()
    if query.edge_id is not None:
        fleet_id = connection.execute(
            select(edges.c.fleet_id).where(edges.c.id == query.edge_id)
        ).scalar()
        if query.fleet_id is not None and fleet_id != query.fleet_id:
            return Repricing()  # another fleet's site: nothing of it is selected
        return Repricing(tuple(job for job in jobs if job.holds(query.edge_id, fleet_id)))
    if query.fleet_id is not None:
        fleet_id = query.fleet_id
        fleet_edges: frozenset[str] = frozenset()
        if any(job.edge_id is not None for job in jobs):
            fleet_edges = frozenset(
                connection.execute(select(edges.c.id).where(edges.c.fleet_id == fleet_id))
                .scalars()
                .all()
            )
        return Repricing(tuple(job for job in jobs if job.touches_fleet(fleet_id, fleet_edges)))
    return Repricing(tuple(jobs))


def get_session(engine: Engine, edge_id: str, transaction_id: int) -> Session | None:
    with reading(engine) as connection:
        row = connection.execute(
            _select_sessions().where(
                transactions.c.edge_id == edge_id, transactions.c.transaction_id == transaction_id
            )
        ).one_or_none()
    return None if row is None else _session(row)


def meter_samples_of(engine: Engine, edge_id: str, transaction_id: int) -> list[MeterSample]:
    """The session's meter samples in time order (at most sessions.max_meter_samples)."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(meter_samples)
            .where(
                meter_samples.c.edge_id == edge_id,
                meter_samples.c.transaction_id == transaction_id,
            )
            .order_by(meter_samples.c.at, meter_samples.c.seq)
        ).all()
    return [MeterSample(row.at, int(row.meter_wh), int(row.energy_wh), row.power_w) for row in rows]


def _select_sessions() -> Select[Any]:
    return select(
        transactions,
        tariffs.c.name.label("tariff_name"),
        tariffs.c.currency,
        tariffs.c.minor_unit_digits,
    ).select_from(transactions.outerjoin(tariffs, tariffs.c.id == transactions.c.tariff_id))


def _page_query(query: SessionFilter, after: Cursor | None, limit: int) -> Select[Any]:
    t = transactions.c
    statement = _where(_select_sessions(), query)
    if after is not None:
        moment = literal(after.session_at, UtcDateTime())
        if query.edge_id is not None:
            # The site is fixed: compare on the columns that follow it in its index.
            statement = statement.where(
                tuple_(t.session_at, t.transaction_id)
                < tuple_(moment, literal(after.transaction_id))
            )
        else:
            statement = statement.where(
                tuple_(t.session_at, t.edge_id, t.transaction_id)
                < tuple_(moment, literal(after.edge_id), literal(after.transaction_id))
            )
    return statement.order_by(t.session_at.desc(), t.edge_id.desc(), t.transaction_id.desc()).limit(
        limit
    )


def _where(statement: Select[Any], query: SessionFilter) -> Select[Any]:
    t = transactions.c
    if query.fleet_id is not None:
        narrower = (query.edge_id, query.charger_id, query.id_tag, query.account)
        if any(value is not None for value in narrower):
            # The site's, card's or account's index reads fewer rows: the fleet is checked
            # on each of them (COALESCE keeps the planner off the fleet's index).
            statement = statement.where(func.coalesce(t.fleet_id, 0) == query.fleet_id)
        else:
            # The fleet's own index, in keyset order: a small fleet in a large store
            # reads its own sessions only.
            statement = statement.where(t.fleet_id == query.fleet_id)
    if query.edge_id is not None:
        statement = statement.where(t.edge_id == query.edge_id)
    if query.charger_id is not None:
        statement = statement.where(t.charger_id == query.charger_id)
    if query.id_tag is not None:
        statement = statement.where(t.id_tag == query.id_tag)
    if query.account is not None:
        statement = statement.where(t.account == query.account)
    if query.since is not None:
        statement = statement.where(t.session_at >= query.since)
    if query.until is not None:
        statement = statement.where(t.session_at < query.until)
    return statement


def _fleet_edges(fleet_id: int) -> Select[Any]:
    """The edges of a fleet. Fleets come with their own migration: until the store has
    them, asking for one is an error, not an empty answer."""
    if "fleet_id" not in edges.c:
        raise StoreError("this store has no fleets: every edge is in the one fleet")
    return select(edges.c.id).where(edges.c["fleet_id"] == fleet_id)


def _session(row: Any) -> Session:
    values = row._mapping
    return Session(**{name: values[name] for name in Session.__dataclass_fields__})


# -- sums ---------------------------------------------------------------------------

SumGroup = Literal["card", "account", "month"]
MAX_GROUPS = 10_000
MONTHS_FROM = datetime(1970, 1, 1, tzinfo=UTC)
MONTHS_UNTIL = datetime(9998, 1, 1, tzinfo=UTC)


def session_sums(
    engine: Engine, query: SessionFilter, group: SumGroup, zone: ZoneInfo
) -> list[SessionSum]:
    """Sessions, energy and costs per card, account or month (in `zone`) of the sessions
    `query` selects: cards and accounts by energy, most first (at most MAX_GROUPS),
    months newest first."""
    with reading(engine) as connection:
        if group == "month":
            return _sums_per_month(connection, query, zone)
        column = transactions.c.id_tag if group == "card" else transactions.c.account
        sums = _sums(connection, query, column)
    ordered = sorted(sums.values(), key=lambda total: (-total.energy_wh, total.key or ""))
    return ordered[:MAX_GROUPS]


def _sums(
    connection: Connection, query: SessionFilter, column: Any | None
) -> dict[Any, SessionSum]:
    """Sums of the sessions `query` selects, per value of `column` (None: one sum, keyed
    None)."""
    t = transactions.c
    keys = [] if column is None else [column]
    statement = _where(
        select(
            *[key.label("key") for key in keys],
            tariffs.c.currency,
            func.count().label("sessions"),
            func.coalesce(func.sum(t.energy_wh), 0).label("energy_wh"),
            func.count(t.cost_minor).label("priced"),
            func.coalesce(func.sum(t.cost_minor), 0).label("cost_minor"),
            func.count(t.stopped_at).label("stopped"),
        ).select_from(transactions.outerjoin(tariffs, tariffs.c.id == t.tariff_id)),
        query,
    ).group_by(*keys, tariffs.c.currency)
    totals: dict[Any, dict[str, Any]] = defaultdict(
        lambda: {"sessions": 0, "energy_wh": 0, "running": 0, "unpriced": 0, "costs": {}}
    )
    for row in connection.execute(statement):
        total = totals[row.key if keys else None]
        total["sessions"] += row.sessions
        total["energy_wh"] += int(row.energy_wh)
        total["running"] += row.sessions - row.stopped
        total["unpriced"] += row.stopped - row.priced
        if row.currency is not None and row.priced:
            costs = total["costs"]
            costs[row.currency] = costs.get(row.currency, 0) + int(row.cost_minor)
    return {key: SessionSum(key, **values) for key, values in totals.items()}


def _sums_per_month(
    connection: Connection, query: SessionFilter, zone: ZoneInfo
) -> list[SessionSum]:
    """Newest month first, each found from the newest session before the last month
    summed: two queries per month that has sessions, none for the months between."""
    # Months are those of the calendar a store holds; a session an edge dated outside is
    # in none of them.
    query = _narrow(query, MONTHS_FROM, MONTHS_UNTIL)
    results: list[SessionSum] = []
    until = query.until
    while len(results) < MAX_GROUPS:
        newest = connection.execute(
            _where(select(func.max(transactions.c.session_at)), _narrow(query, None, until))
        ).scalar()
        if newest is None:
            return results
        month = Month.of(newest, zone)
        start = month.start(zone)
        totals = _sums(connection, _narrow(query, start, month.end(zone)), None).get(None)
        if totals is not None:
            results.append(_keyed(totals, str(month)))
        until = start
    return results


def _narrow(query: SessionFilter, since: datetime | None, until: datetime | None) -> SessionFilter:
    """`query` within [since, until) (None: no further bound)."""
    return SessionFilter(
        fleet_id=query.fleet_id,
        edge_id=query.edge_id,
        charger_id=query.charger_id,
        id_tag=query.id_tag,
        account=query.account,
        since=_later(since, query.since),
        until=_earlier(until, query.until),
    )


def _later(first: datetime | None, second: datetime | None) -> datetime | None:
    return second if first is None else first if second is None else max(first, second)


def _earlier(first: datetime | None, second: datetime | None) -> datetime | None:
    return second if first is None else first if second is None else min(first, second)


# -- month closing ------------------------------------------------------------------


def month_closings(
    engine: Engine,
    months: Sequence[Month],
    zone: ZoneInfo,
    now: datetime,
    edge_id: str | None = None,
    fleet_id: int | None = None,
) -> list[MonthClosing]:
    """Each site's state for each of `months`: final or provisional and why, with its
    sums. Of one edge, a fleet's, or every edge; sites by id, months as given."""
    edge_query = select(edges).order_by(edges.c.id)
    if edge_id is not None:
        edge_query = edge_query.where(edges.c.id == edge_id)
    if fleet_id is not None:
        edge_query = edge_query.where(edges.c.id.in_(_fleet_edges(fleet_id)))
    closings: list[MonthClosing] = []
    with reading(engine) as connection:
        sites = connection.execute(edge_query).all()
        per_month = {
            month: _sums(
                connection,
                SessionFilter(
                    fleet_id=fleet_id,
                    edge_id=edge_id,
                    since=month.start(zone),
                    until=month.end(zone),
                ),
                transactions.c.edge_id,
            )
            for month in months
        }
    for site in sites:
        for month in months:
            sums = per_month[month].get(site.id) or SessionSum(site.id)
            start, end = month.start(zone), month.end(zone)
            reasons = month_reasons(site, end, now, sums.running)
            closings.append(
                MonthClosing(
                    site.id, month, start, end, not reasons, reasons, _keyed(sums, str(month))
                )
            )
    return closings


def month_reasons(site: Any, end: datetime, now: datetime, running: int) -> list[str]:
    """Why a site's month that ends at `end` is not final yet (none: it is final).
    `site` is its `edges` row."""
    reasons: list[str] = []
    if now < end:
        reasons.append("the month has not ended")
    synced_past = site.last_event_at is not None and site.last_event_at > end
    if not synced_past:
        if site.state == "offline" and site.status_at is not None:
            reasons.append(f"edge offline since {iso(site.status_at)}")
        if site.last_event_at is None:
            reasons.append("no data from this edge yet")
        else:
            reasons.append(f"its data reaches {iso(site.last_event_at)}, not past the month's end")
    if site.backlog_empty_at is None or site.backlog_empty_at <= end:
        if site.backlog and site.figures_at is not None:
            oldest = site.oldest_age_s
            age = f", the oldest {_age(oldest)} old" if oldest is not None else ""
            reasons.append(f"backlog {site.backlog} events{age} at {iso(site.figures_at)}")
        else:
            reasons.append("no empty backlog reported since the month's end")
    if running:
        reasons.append(f"{running} session{'s' * (running != 1)} of the month still running")
    return reasons


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _keyed(sums: SessionSum, key: str) -> SessionSum:
    return SessionSum(key, sums.sessions, sums.energy_wh, sums.running, sums.unpriced, sums.costs)


def recent_months(now: datetime, zone: ZoneInfo, count: int) -> list[Month]:
    """The `count` months up to the one holding `now`, newest first."""
    months = [Month.of(now, zone)]
    while len(months) < count:
        months.append(months[-1].previous())
    return months


def edge_known(engine: Engine, edge_id: str) -> bool:
    with reading(engine) as connection:
        found = connection.execute(select(edges.c.id).where(edges.c.id == edge_id)).first()
    return found is not None


def currency_digits(engine: Engine) -> dict[str, int]:
    """Each currency's minor unit digits, as its tariffs have them (sums in minor units
    are shown in the major one)."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(tariffs.c.currency, func.max(tariffs.c.minor_unit_digits)).group_by(
                tariffs.c.currency
            )
        ).all()
    return {currency: int(digits) for currency, digits in rows}
