"""The tariffs page: the fleet's tariffs (its default and each site's own, with their
time bands and when each is in force) beside those set for every fleet through the API,
and the re-pricing of sessions still under way; admins add, change, end and remove the
fleet's tariffs with plain forms (they work without JavaScript).

Every change goes through the tariff store held to the user's fleet
(`cloud/store/tariffs.py`, `fleet_id=`): another fleet's tariff, or one set for every
fleet, is 404 here, as one that does not exist. A change is recorded in the audit log and
leaves the re-pricing of its sessions to the background (the replica is told at once).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from cloud.store import overview
from cloud.store import tariffs as tariff_store
from cloud.store.repricing import RepricingJob, list_jobs
from cloud.store.tariffs import MAX_BANDS, TariffRecord, TariffRefused, TariffSpec, UnknownTariff
from cloud.store.users import User
from cloud.tariffs import (
    DAY_NAMES,
    Band,
    TariffError,
    format_clock,
    parse_clock,
    price_from_decimal,
    price_text,
    zone_named,
)
from cloud.web import audit
from cloud.web.auth import Admin, Viewer, WebRefusal

if TYPE_CHECKING:
    from cloud.web.app import WebContext

FLEET_SCOPE = "fleet"
MAX_FIELD = 255
# Empty band rows a form offers beyond the tariff's own (more: the API).
SPARE_BAND_ROWS = 3
LOCAL_TIME = "%Y-%m-%dT%H:%M"


@dataclass(frozen=True)
class TariffRow:
    """A tariff as the list shows it."""

    record: TariffRecord
    scope: str  # "every fleet", "fleet default" or the site's name
    editable: bool  # the fleet's own (its default, or a site's)
    state: str  # "in force", "from T", "replaced", "ended"

    @property
    def spec(self) -> TariffSpec:
        return self.record.spec


@dataclass
class TariffForm:
    """The form's fields as the user gave them (text), and what is wrong with them."""

    name: str = ""
    scope: str = FLEET_SCOPE
    currency: str = "EUR"
    minor_unit_digits: str = "2"
    time_zone: str = "UTC"
    valid_from: str = ""
    valid_until: str = ""
    price: str = ""
    # Per row: days (names), start, end, price.
    bands: list[tuple[list[str], str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, form: FormData) -> TariffForm:
        def text(name: str) -> str:
            value = form.get(name)
            if not isinstance(value, str):
                return ""
            if len(value) > MAX_FIELD:
                raise WebRefusal(422, f"The field {name[:40]} is longer than {MAX_FIELD}.")
            return value.strip()

        bands = []
        for index in range(MAX_BANDS):
            days = [day for day in form.getlist(f"band-{index}-days") if isinstance(day, str)]
            row = (
                [day for day in days if day in DAY_NAMES],
                text(f"band-{index}-start"),
                text(f"band-{index}-end"),
                text(f"band-{index}-price"),
            )
            bands.append(row)
        while bands and not any(bands[-1][0]) and not any(bands[-1][1:]):
            bands.pop()
        return cls(
            name=text("name"),
            scope=text("scope") or FLEET_SCOPE,
            currency=text("currency").upper(),
            minor_unit_digits=text("minor_unit_digits") or "2",
            time_zone=text("time_zone") or "UTC",
            valid_from=text("valid_from"),
            valid_until=text("valid_until"),
            price=text("price"),
            bands=bands,
        )

    @classmethod
    def of_record(cls, record: TariffRecord) -> TariffForm:
        spec = record.spec
        zone = zone_named(spec.time_zone)
        return cls(
            name=spec.name,
            scope=spec.edge_id or FLEET_SCOPE,
            currency=spec.currency,
            minor_unit_digits=str(spec.minor_unit_digits),
            time_zone=spec.time_zone,
            valid_from=spec.valid_from.astimezone(zone).strftime(LOCAL_TIME),
            valid_until=(
                spec.valid_until.astimezone(zone).strftime(LOCAL_TIME) if spec.valid_until else ""
            ),
            price=price_text(spec.price),
            bands=[
                (
                    [DAY_NAMES[day] for day in sorted(band.days)],
                    format_clock(band.start_minute),
                    format_clock(band.end_minute),
                    price_text(band.price),
                )
                for band in spec.bands
            ],
        )

    def rows(self) -> list[tuple[list[str], str, str, str]]:
        """The band rows to show: the given ones and a few empty."""
        spare = max(0, min(SPARE_BAND_ROWS, MAX_BANDS - len(self.bands)))
        return self.bands + [([], "", "", "")] * spare

    def spec(self, user: User) -> TariffSpec | None:
        """The tariff the form describes, held to the user's fleet; None with `errors`
        set when it is not one (each error names its field or band)."""
        errors = self.errors
        if not self.name:
            errors.append("Name: give the tariff a name.")
        zone = None
        try:
            zone = zone_named(self.time_zone)
        except TariffError as error:
            errors.append(f"Time zone: {error}.")
        if not self.minor_unit_digits.isdigit() or not 0 <= int(self.minor_unit_digits) <= 4:
            errors.append("Minor unit: 0 to 4 digits (2 for cents).")
        price = _price("Price", self.price, errors)
        bands = []
        for index, (days, start, end, band_price) in enumerate(self.bands, start=1):
            if not days and not start and not end and not band_price:
                continue
            label = f"Band {index}"
            if not days:
                errors.append(f"{label}: tick at least one day.")
            try:
                start_minute, end_minute = parse_clock(start), parse_clock(end)
            except TariffError as error:
                errors.append(f"{label}: {error}.")
                continue
            cost = _price(label, band_price, errors)
            if days and cost is not None:
                chosen = frozenset(DAY_NAMES.index(day) for day in days)
                bands.append(Band(chosen, start_minute, end_minute, cost))
        since = _local_time("Valid from", self.valid_from, zone, errors, required=True)
        until = _local_time("Ends", self.valid_until, zone, errors, required=False)
        if errors or price is None or since is None:
            return None
        spec = TariffSpec(
            name=self.name,
            currency=self.currency,
            valid_from=since,
            price=price,
            edge_id=None if self.scope == FLEET_SCOPE else self.scope,
            minor_unit_digits=int(self.minor_unit_digits),
            time_zone=self.time_zone,
            bands=tuple(bands),
            fleet_id=user.fleet_id if self.scope == FLEET_SCOPE else None,
            valid_until=until,
        )
        try:
            spec.checked()
        except (TariffRefused, TariffError, ValueError) as error:
            errors.append(_sentence(str(error)))
            return None
        return spec


def _price(label: str, text: str, errors: list[str]) -> int | None:
    try:
        value = Decimal(text)
        if not value.is_finite():
            raise InvalidOperation
        price = price_from_decimal(value)
    except (InvalidOperation, TariffError):
        errors.append(f"{label}: a price per kWh such as 0.32 (at most 6 decimals).")
        return None
    if price <= 0:
        errors.append(f"{label}: a price per kWh is more than 0.")
        return None
    return price


def _local_time(
    label: str, text: str, zone: Any, errors: list[str], *, required: bool
) -> datetime | None:
    """A `datetime-local` field (YYYY-MM-DDTHH:MM) in the tariff's time zone, as UTC."""
    if not text:
        if required:
            errors.append(f"{label}: give a date and time.")
        return None
    try:
        moment = datetime.strptime(text[:16], LOCAL_TIME)
    except ValueError:
        errors.append(f"{label}: a date and time such as 2026-04-01T00:00.")
        return None
    if zone is None:
        return None
    try:
        return moment.replace(tzinfo=zone).astimezone(UTC)
    except (OverflowError, ValueError):
        errors.append(f"{label}: beyond the times a store holds.")
        return None


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def tariff_rows(records: list[TariffRecord], names: dict[str, str], now: datetime) -> list[Any]:
    """The tariffs grouped by scope (every fleet, the fleet's default, each site), each
    with its state now."""
    by_scope: dict[tuple[int, str], list[TariffRecord]] = defaultdict(list)
    for record in records:
        spec = record.spec
        if spec.edge_id is not None:
            key = (2, names.get(spec.edge_id, spec.edge_id))
        elif spec.fleet_id is not None:
            key = (1, "fleet default")
        else:
            key = (0, "every fleet")
        by_scope[key].append(record)
    rows = []
    for (order, scope), scoped in sorted(by_scope.items()):
        scoped.sort(key=lambda record: record.spec.valid_from)
        for index, record in enumerate(scoped):
            spec = record.spec
            later = scoped[index + 1].spec.valid_from if index + 1 < len(scoped) else None
            if spec.valid_from > now:
                state = f"from {_day(spec.valid_from)}"
            elif later is not None and later <= now:
                state = f"replaced on {_day(later)}"
            elif spec.valid_until is not None and spec.valid_until <= now:
                state = f"ended on {_day(spec.valid_until)}"
            else:
                state = "in force"
            rows.append(TariffRow(record, scope, order > 0, state))
    return rows


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")


def tariffs_values(context: WebContext, user: User) -> dict[str, Any]:
    now = datetime.now(UTC)
    sites = overview.fleet_edges(context.engine, user.fleet_id)
    names = {site.edge_id: site.name for site in sites}
    records = tariff_store.list_tariffs(context.engine, fleet_id=user.fleet_id)
    fleet_edges = frozenset(names)
    jobs = [
        job for job in list_jobs(context.engine) if job.touches_fleet(user.fleet_id, fleet_edges)
    ]
    return {
        "rows": tariff_rows(records, names, now),
        "jobs": [_job_view(job, names) for job in jobs],
        "now": now,
    }


def _job_view(job: RepricingJob, names: dict[str, str]) -> dict[str, Any]:
    if job.edge_id is not None:
        scope = names.get(job.edge_id, job.edge_id)
    else:
        scope = "every site" if job.fleet_id is None else "the fleet's sites"
    return {"job": job, "scope": scope, "from": job.waiting_from}


def form_values(
    context: WebContext, user: User, form: TariffForm, record: TariffRecord | None
) -> dict[str, Any]:
    sites = overview.fleet_edges(context.engine, user.fleet_id)
    return {
        "form": form,
        "record": record,
        "sites": sites,
        "day_names": DAY_NAMES,
        "max_field": MAX_FIELD,
    }


def _audit_detail(spec: TariffSpec, jobs: tuple[int, ...]) -> dict[str, Any]:
    return {
        "name": spec.name,
        "scope": spec.edge_id or FLEET_SCOPE,
        "price_per_kwh": price_text(spec.price),
        "currency": spec.currency,
        "bands": len(spec.bands),
        "valid_from": spec.valid_from.isoformat(),
        "valid_until": spec.valid_until.isoformat() if spec.valid_until else None,
        "repricing": list(jobs),
    }


def _tariff_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**31:
        raise WebRefusal(404, "There is no such tariff in your fleet.")
    return int(text)


def add_routes(router: APIRouter, context: WebContext) -> None:
    engine = context.engine

    def fleet_tariff(user: User, tariff_id: int) -> TariffRecord:
        try:
            return tariff_store.get_tariff(engine, tariff_id, fleet_id=user.fleet_id)
        except UnknownTariff as error:
            raise WebRefusal(404, "There is no such tariff in your fleet.") from error

    def done(request: Request) -> Response:
        response = RedirectResponse("/web/tariffs", status_code=303)
        context.finish(request, response)
        return response

    async def refused_form(
        request: Request, user: User, form: TariffForm, record: TariffRecord | None
    ) -> HTMLResponse:
        values = await asyncio.to_thread(form_values, context, user, form, record)
        return context.page(request, "tariff_form.html", values, status=422)

    @router.get("/web/tariffs")
    async def tariffs_page(request: Request, user: Viewer) -> HTMLResponse:
        values = await asyncio.to_thread(tariffs_values, context, user)
        return context.page(request, "tariffs.html", values)

    @router.get("/web/tariffs/new")
    async def new_tariff(request: Request, user: Admin) -> HTMLResponse:
        form = TariffForm(time_zone=context.sessions.time_zone)
        values = await asyncio.to_thread(form_values, context, user, form, None)
        return context.page(request, "tariff_form.html", values)

    @router.post("/web/tariffs")
    async def add_tariff(request: Request, user: Admin) -> Response:
        form = TariffForm.of(await request.form())
        spec = form.spec(user)
        if spec is None:
            return await refused_form(request, user, form, None)
        try:
            change = await asyncio.to_thread(
                tariff_store.create_tariff, engine, spec, user.fleet_id
            )
        except UnknownTariff:
            form.errors.append("Scope: choose the fleet or one of its sites.")
            return await refused_form(request, user, form, None)
        except TariffRefused as refused:
            form.errors.append(_sentence(str(refused)))
            return await refused_form(request, user, form, None)
        assert change.tariff is not None
        context.on_repricing()
        await audit.record(
            engine,
            user,
            "tariff.add",
            f"tariff {change.tariff.id}",
            _audit_detail(spec, change.jobs),
        )
        return done(request)

    @router.get("/web/tariffs/{tariff_id}")
    async def edit_tariff(request: Request, tariff_id: str, user: Admin) -> HTMLResponse:
        record = await asyncio.to_thread(fleet_tariff, user, _tariff_id(tariff_id))
        values = await asyncio.to_thread(
            form_values, context, user, TariffForm.of_record(record), record
        )
        return context.page(request, "tariff_form.html", values)

    @router.post("/web/tariffs/{tariff_id}")
    async def change_tariff(request: Request, tariff_id: str, user: Admin) -> Response:
        record = await asyncio.to_thread(fleet_tariff, user, _tariff_id(tariff_id))
        form = TariffForm.of(await request.form())
        spec = form.spec(user)
        if spec is None:
            return await refused_form(request, user, form, record)
        try:
            change = await asyncio.to_thread(
                tariff_store.update_tariff, engine, record.id, spec, user.fleet_id
            )
        except UnknownTariff:
            form.errors.append("Scope: choose the fleet or one of its sites.")
            return await refused_form(request, user, form, record)
        except TariffRefused as refused:
            form.errors.append(_sentence(str(refused)))
            return await refused_form(request, user, form, record)
        context.on_repricing()
        await audit.record(
            engine, user, "tariff.change", f"tariff {record.id}", _audit_detail(spec, change.jobs)
        )
        return done(request)

    @router.post("/web/tariffs/{tariff_id}/end")
    async def end_tariff(request: Request, tariff_id: str, user: Admin) -> Response:
        record = await asyncio.to_thread(fleet_tariff, user, _tariff_id(tariff_id))
        submitted = await request.form()
        until_text = submitted.get("until")
        errors: list[str] = []
        until = _local_time(
            "Ends",
            until_text.strip()[:MAX_FIELD] if isinstance(until_text, str) else "",
            zone_named(record.spec.time_zone),
            errors,
            required=True,
        )
        try:
            if until is None:
                raise TariffRefused(errors[0] if errors else "give the end's date and time")
            change = await asyncio.to_thread(
                tariff_store.end_tariff, engine, record.id, until, user.fleet_id
            )
        except TariffRefused as refused:
            form = TariffForm.of_record(record)
            form.errors.append(_sentence(str(refused)))
            return await refused_form(request, user, form, record)
        assert change.tariff is not None
        context.on_repricing()
        await audit.record(
            engine,
            user,
            "tariff.end",
            f"tariff {record.id}",
            _audit_detail(change.tariff.spec, change.jobs),
        )
        return done(request)

    @router.post("/web/tariffs/{tariff_id}/remove")
    async def remove_tariff(request: Request, tariff_id: str, user: Admin) -> Response:
        record = await asyncio.to_thread(fleet_tariff, user, _tariff_id(tariff_id))
        try:
            change = await asyncio.to_thread(
                tariff_store.delete_tariff, engine, record.id, user.fleet_id
            )
        except UnknownTariff as error:
            raise WebRefusal(404, "There is no such tariff in your fleet.") from error
        context.on_repricing()
        await audit.record(
            engine,
            user,
            "tariff.remove",
            f"tariff {record.id}",
            _audit_detail(record.spec, change.jobs),
        )
        return done(request)
