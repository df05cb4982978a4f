"""The REST API's sessions and tariffs (bearer token, like every route of cloud/api.py):

- `GET /api/sessions`: sessions newest first, filtered (site, charger, card, account,
  period or month), a page at a time with a cursor; energy, duration, cost, and whether
  each was recorded offline (and when it synced).
- `GET /api/sessions/sums`: sessions, energy and cost per card, account or month.
- `GET /api/sessions.csv`: exactly the sessions the same filters select, streamed.
- `GET /api/sessions/{edge_id}/{transaction_id}/meter`: a session's meter samples.
- `GET /api/months`: each site's months, final or provisional and why, with their sums.
- `/api/tariffs`: list, add, read, change, remove; each change queues the re-pricing of
  the sessions the tariff covers (done in the background: `GET /api/repricing` shows
  what is left; until then those sessions say `cost_recalculating`).

The seven filters (site, charger, card, account, from, to, month) are one dependency,
`SessionQuery`, shared by the list, the sums and the CSV.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from cloud.settings import SessionSettings
from cloud.store import sessions as store
from cloud.store import tariffs as tariff_store
from cloud.store.repricing import RepricingJob, list_jobs
from cloud.store.sessions import Cursor, InvalidCursor, Month, Session, SessionFilter
from cloud.store.tariffs import TariffRecord, TariffRefused, TariffSpec, UnknownTariff
from cloud.tariffs import (
    DAY_NAMES,
    Band,
    TariffError,
    format_clock,
    parse_clock,
    price_from_decimal,
    price_text,
)
from contract.protocol import EDGE_ID_PATTERN, INT64_MAX

DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Price = Annotated[Decimal, Field(gt=0, le=10_000, decimal_places=6)]
# Text filters: an idTag is at most 20 characters, a charger id is what the edge sent.
FilterText = Annotated[str | None, Query(min_length=1, max_length=255)]
CSV_COLUMNS = (
    "edge_id",
    "charger_id",
    "connector_id",
    "transaction_id",
    "id_tag",
    "account",
    "started_at",
    "stopped_at",
    "duration_s",
    "energy_wh",
    "energy_kwh",
    "cost",
    "currency",
    "tariff",
    "recorded_offline",
    "synced_at",
    "stop_reason",
    "cost_status",
)
# Text a spreadsheet would run as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class BandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: list[DayName] = Field(min_length=1, max_length=7)
    start: str = Field(description="HH:MM, local time in the tariff's time zone", max_length=5)
    end: str = Field(
        description="HH:MM (24:00: midnight); before start: over midnight", max_length=5
    )
    price_per_kwh: Price


class TariffBody(BaseModel):
    """A tariff: `price_per_kwh` in the currency's major unit (0.2734), `bands` with their
    own price at some hours of some weekdays (in `time_zone`); for every site, or one."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    edge_id: str | None = Field(None, pattern=EDGE_ID_PATTERN, description="One site's")
    fleet_id: int | None = Field(
        None, ge=1, le=2**31 - 1, description="With no edge_id: that fleet's sites; neither: all"
    )
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. EUR")
    minor_unit_digits: int = Field(2, ge=0, le=4, description="2 for cents")
    time_zone: str = Field("UTC", max_length=64)
    valid_from: AwareDatetime
    valid_until: AwareDatetime | None = Field(
        None, description="Ended: from then on the next scope's tariffs price its sites"
    )
    price_per_kwh: Price
    bands: list[BandBody] = Field([], max_length=tariff_store.MAX_BANDS)

    def spec(self) -> TariffSpec:
        try:
            bands = tuple(
                Band(
                    frozenset(DAY_NAMES.index(day) for day in band.days),
                    parse_clock(band.start),
                    parse_clock(band.end),
                    price_from_decimal(band.price_per_kwh),
                )
                for band in self.bands
            )
            spec = TariffSpec(
                name=self.name,
                currency=self.currency,
                valid_from=_utc(self.valid_from),
                price=price_from_decimal(self.price_per_kwh),
                edge_id=self.edge_id,
                minor_unit_digits=self.minor_unit_digits,
                time_zone=self.time_zone,
                bands=bands,
                fleet_id=self.fleet_id,
                valid_until=_utc(self.valid_until) if self.valid_until else None,
            )
            spec.checked()
        except (TariffError, TariffRefused) as error:
            raise HTTPException(422, str(error)) from error
        return spec


class SessionFilters:
    """The filters every sessions route takes, as given (checked by `query`)."""

    def __init__(
        self,
        edge: FilterText = None,
        charger: FilterText = None,
        card: FilterText = None,
        account: FilterText = None,
        since: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        until: Annotated[str | None, Query(alias="to", max_length=40)] = None,
        month: Annotated[str | None, Query(max_length=7, description="YYYY-MM")] = None,
    ) -> None:
        self.edge = edge
        self.charger = charger
        self.card = card
        self.account = account
        self.since = since
        self.until = until
        self.month = month

    def query(self, zone: ZoneInfo) -> SessionFilter:
        """The store's filter; 422 for a period or month that is none."""
        if self.month is not None and (self.since is not None or self.until is not None):
            raise HTTPException(422, "give a month, or from and to, not both")
        start: datetime | None
        end: datetime | None
        try:
            if self.month is not None:
                chosen_month = Month.parse(self.month)
                start, end = chosen_month.start(zone), chosen_month.end(zone)
            else:
                start = parse_moment(self.since, zone, "from") if self.since else None
                end = parse_moment(self.until, zone, "to") if self.until else None
        except ValueError as error:
            raise HTTPException(422, str(error)) from error
        return SessionFilter(
            edge_id=self.edge,
            charger_id=self.charger,
            id_tag=self.card,
            account=self.account,
            since=start,
            until=end,
        )


# A route's filters: `filters: SessionQuery` (module level: FastAPI reads the annotation
# in this module's names).
SessionQuery = Annotated[SessionFilters, Depends()]


def add_session_routes(
    routes: APIRouter,
    settings: SessionSettings,
    engine: Engine,
    on_repricing: Callable[[], None] = lambda: None,
) -> None:
    """The sessions, months and tariffs routes; `on_repricing()`: a tariff change queued
    re-pricing (the replica's Repricer starts on it)."""
    zone = settings.zone

    @routes.get("/api/sessions", summary="Sessions newest first, filtered, a page at a time")
    async def list_sessions(
        filters: SessionQuery,
        cursor: Annotated[str | None, Query(max_length=400)] = None,
        limit: Annotated[int, Query(ge=1, le=store.MAX_PAGE)] = 50,
    ) -> dict[str, Any]:
        query = filters.query(zone)
        try:
            after = Cursor.parse(cursor) if cursor else None
        except InvalidCursor as error:
            raise HTTPException(422, str(error)) from error
        page = await asyncio.to_thread(store.session_page, engine, query, limit, after)
        now = datetime.now(UTC)
        return {
            "sessions": [
                session_document(s, now, settings, page.repricing.waiting(s)) for s in page.sessions
            ],
            "next_cursor": page.next_cursor.text() if page.next_cursor else None,
        }

    @routes.get("/api/sessions/sums", summary="Sessions, energy, cost per card/account/month")
    async def session_sums(
        group: Literal["card", "account", "month"], filters: SessionQuery
    ) -> dict[str, Any]:
        query = filters.query(zone)
        sums = await asyncio.to_thread(store.session_sums, engine, query, group, zone)
        repricing = await asyncio.to_thread(store.repricing_of, engine, query)

        def recalculating(total: store.SessionSum) -> bool:
            if group == "month" and total.key is not None:
                return repricing.month(Month.parse(total.key), zone)
            return repricing.before(query.until)

        return {
            "group": group,
            "time_zone": settings.time_zone,
            "sums": [_sum(s) | {"cost_recalculating": recalculating(s)} for s in sums],
        }

    @routes.get(
        "/api/sessions.csv",
        summary="The sessions the filters select, as CSV (streamed)",
        response_class=StreamingResponse,
    )
    async def export_sessions(filters: SessionQuery) -> StreamingResponse:
        query = filters.query(zone)
        return StreamingResponse(
            session_csv(engine, query, settings),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="sessions.csv"'},
        )

    @routes.get(
        "/api/sessions/{edge_id}/{transaction_id}/meter",
        summary="A session and its meter samples (its power and energy curve)",
    )
    async def session_meter(edge_id: str, transaction_id: int) -> dict[str, Any]:
        if not -INT64_MAX - 1 <= transaction_id <= INT64_MAX:
            raise HTTPException(404, f"no session {transaction_id} of edge {edge_id}")
        session = await asyncio.to_thread(store.get_session, engine, edge_id, transaction_id)
        if session is None:
            raise HTTPException(404, f"no session {transaction_id} of edge {edge_id}")
        samples = await asyncio.to_thread(store.meter_samples_of, engine, edge_id, transaction_id)
        return {
            "session": session_document(session, datetime.now(UTC), settings),
            "samples": [
                {
                    "at": sample.at,
                    "meter_wh": sample.meter_wh,
                    "energy_wh": sample.energy_wh,
                    "power_w": sample.power_w,
                }
                for sample in samples
            ],
            "max_samples": settings.max_meter_samples,
        }

    @routes.get("/api/months", summary="Each site's months: final, or provisional and why")
    async def list_months(
        edge: Annotated[str | None, Query(pattern=EDGE_ID_PATTERN)] = None,
        month: Annotated[str | None, Query(max_length=7, description="YYYY-MM")] = None,
        count: Annotated[int, Query(ge=1, le=120, description="Months up to this one")] = 12,
    ) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        try:
            months = [Month.parse(month)] if month else store.recent_months(now, zone, count)
        except ValueError as error:
            raise HTTPException(422, str(error)) from error
        if edge is not None and not await asyncio.to_thread(store.edge_known, engine, edge):
            raise HTTPException(404, f"no edge {edge} has been in touch with this cloud")
        closings = await asyncio.to_thread(
            store.month_closings, engine, months, zone, now, edge_id=edge
        )
        return [
            {
                "edge_id": closing.edge_id,
                "month": str(closing.month),
                "start": closing.start,
                "end": closing.end,
                "state": "final" if closing.final else "provisional",
                "reasons": closing.reasons,
            }
            | _sum(closing.sums)
            for closing in closings
        ]

    _add_tariff_routes(routes, engine, on_repricing)


def _add_tariff_routes(routes: APIRouter, engine: Engine, on_repricing: Callable[[], None]) -> None:
    @routes.get("/api/tariffs", summary="Tariffs: all, or those that may price a site or fleet")
    async def list_tariffs(
        edge: Annotated[str | None, Query(pattern=EDGE_ID_PATTERN)] = None,
        fleet: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    ) -> list[dict[str, Any]]:
        records = await asyncio.to_thread(tariff_store.list_tariffs, engine, edge, fleet)
        return [tariff_document(record) for record in records]

    @routes.get("/api/repricing", summary="Sessions still to be priced again, per job")
    async def repricing_left() -> list[dict[str, Any]]:
        jobs = await asyncio.to_thread(list_jobs, engine)
        return [repricing_document(job) for job in jobs]

    @routes.post(
        "/api/tariffs",
        status_code=201,
        summary="Add a tariff; the sessions it covers are priced again (in the background)",
    )
    async def add_tariff(body: TariffBody) -> dict[str, Any]:
        with _tariff_answers():
            change = await asyncio.to_thread(tariff_store.create_tariff, engine, body.spec())
        assert change.tariff is not None
        on_repricing()
        return tariff_document(change.tariff) | {"repricing": list(change.jobs)}

    @routes.get("/api/tariffs/{tariff_id}", summary="One tariff")
    async def get_tariff(tariff_id: int) -> dict[str, Any]:
        with _tariff_answers():
            record = await asyncio.to_thread(
                tariff_store.get_tariff, engine, _tariff_key(tariff_id)
            )
        return tariff_document(record)

    @routes.put("/api/tariffs/{tariff_id}", summary="Change a tariff; its sessions re-priced")
    async def change_tariff(tariff_id: int, body: TariffBody) -> dict[str, Any]:
        with _tariff_answers():
            change = await asyncio.to_thread(
                tariff_store.update_tariff, engine, _tariff_key(tariff_id), body.spec()
            )
        assert change.tariff is not None
        on_repricing()
        return tariff_document(change.tariff) | {"repricing": list(change.jobs)}

    @routes.delete("/api/tariffs/{tariff_id}", summary="Remove a tariff; its sessions re-priced")
    async def remove_tariff(tariff_id: int) -> dict[str, Any]:
        with _tariff_answers():
            change = await asyncio.to_thread(
                tariff_store.delete_tariff, engine, _tariff_key(tariff_id)
            )
        on_repricing()
        return {"deleted": tariff_id, "repricing": list(change.jobs)}


@contextlib.contextmanager
def _tariff_answers() -> Iterator[None]:
    """The tariff store's refusals as HTTP answers: 404 unknown, 422 refused."""
    try:
        yield
    except UnknownTariff as error:
        raise HTTPException(404, str(error)) from error
    except (TariffRefused, TariffError) as error:
        raise HTTPException(422, str(error)) from error


def _tariff_key(tariff_id: int) -> int:
    # Tariff ids are INTEGER: a larger number names none (and must not reach the store).
    if not 0 < tariff_id < 2**31:
        raise UnknownTariff(f"no tariff {tariff_id}")
    return tariff_id


def tariff_document(record: TariffRecord) -> dict[str, Any]:
    spec = record.spec
    return {
        "id": record.id,
        "name": spec.name,
        "edge_id": spec.edge_id,
        "fleet_id": spec.fleet_id,
        "currency": spec.currency,
        "minor_unit_digits": spec.minor_unit_digits,
        "time_zone": spec.time_zone,
        "valid_from": spec.valid_from,
        "valid_until": spec.valid_until,
        "price_per_kwh": price_text(spec.price),
        "bands": [
            {
                "days": [DAY_NAMES[day] for day in sorted(band.days)],
                "start": format_clock(band.start_minute),
                "end": format_clock(band.end_minute),
                "price_per_kwh": price_text(band.price),
            }
            for band in spec.bands
        ],
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def repricing_document(job: RepricingJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "edge_id": job.edge_id,
        "fleet_id": job.fleet_id,
        "since": job.since,
        "done_until": job.after[0] if job.after else None,
        "repriced": job.repriced,
        "reason": job.reason,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def session_document(
    session: Session, now: datetime, settings: SessionSettings, recalculating: bool = False
) -> dict[str, Any]:
    return {
        "edge_id": session.edge_id,
        "transaction_id": session.transaction_id,
        "charger_id": session.charger_id,
        "connector_id": session.connector_id,
        "id_tag": session.id_tag,
        "id_tag_status": session.id_tag_status,
        "account": session.account,
        "session_at": session.session_at,
        "started_at": session.started_at,
        "stopped_at": session.stopped_at,
        "running": session.running,
        "duration_s": session.duration_s(now),
        "meter_start_wh": session.meter_start_wh,
        "meter_stop_wh": session.meter_stop_wh,
        "energy_wh": session.energy_wh,
        "power_w": session.power_w,
        "stop_reason": session.stop_reason,
        "cost_minor": session.cost_minor,
        "cost": session.cost,
        "currency": session.currency if session.cost_minor is not None else None,
        "tariff_id": session.tariff_id,
        "tariff_name": session.tariff_name,
        "cost_recalculating": recalculating,
        "recorded_offline": session.recorded_offline(settings.offline_after_s),
        "synced_at": session.synced_at,
        "sync_delay_s": session.sync_delay_s,
    }


def session_csv(engine: Engine, query: SessionFilter, settings: SessionSettings) -> Iterator[str]:
    """The CSV of every session `query` selects, newest first: a header, then rows a page
    at a time (run in a worker thread by the streaming response)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    now = datetime.now(UTC)
    for index, (session, waiting) in enumerate(store.marked_sessions(engine, query), start=1):
        writer.writerow(_csv_row(session, now, settings, waiting))
        if index % store.MAX_PAGE == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def cost_status(session: Session, recalculating: bool) -> str:
    """The CSV's word on a session's cost: recalculating (a tariff changed and its cost
    is not computed again yet), running, unpriced (no tariff covers it) or priced."""
    if recalculating:
        return "recalculating"
    if session.running:
        return "running"
    return "priced" if session.cost is not None else "unpriced"


def _csv_row(
    session: Session, now: datetime, settings: SessionSettings, recalculating: bool
) -> list[Any]:
    offline = session.recorded_offline(settings.offline_after_s)
    duration = session.duration_s(now)
    return [
        session.edge_id,
        _text(session.charger_id),
        session.connector_id,
        session.transaction_id,
        _text(session.id_tag),
        _text(session.account),
        _time(session.started_at),
        _time(session.stopped_at),
        "" if duration is None else round(duration),
        session.energy_wh,
        f"{Decimal(session.energy_wh) / 1000:.3f}",
        session.cost or "",
        session.currency if session.cost is not None else "",
        _text(session.tariff_name),
        {True: "yes", False: "no", None: ""}[offline],
        _time(session.synced_at),
        _text(session.stop_reason),
        cost_status(session, recalculating),
    ]


def _text(value: str | None) -> str:
    """Text from a charger or an operator, never a formula in a spreadsheet."""
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _time(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _sum(total: store.SessionSum) -> dict[str, Any]:
    return {
        "key": total.key,
        "sessions": total.sessions,
        "energy_wh": total.energy_wh,
        "running": total.running,
        "unpriced": total.unpriced,
        "costs_minor": total.costs,
    }


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError as error:
        raise TariffError(f"{moment.isoformat()} is beyond the times a store holds") from error


def parse_moment(text: str, zone: Any, name: str) -> datetime:
    """An ISO time with an offset, or a date (its midnight in `zone`)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=zone)
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"{name}: {text!r} is not a date or an ISO time") from error
    if moment.tzinfo is None:
        raise ValueError(f"{name}: {text!r} needs an offset (e.g. Z)")
    try:
        return moment.astimezone(UTC)
    except OverflowError as error:  # 9999-12-31T23:00-05:00 is past the last UTC time
        raise ValueError(f"{name}: {text!r} is beyond the times a store holds") from error
