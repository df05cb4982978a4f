"""The tariffs page through the real ASGI app on SQLite and PostgreSQL: a fleet's tariffs
beside those for every fleet (never another fleet's), admins only adding, changing,
ending and removing them with the CSRF token, each field checked (nothing stored from a
wrong form), each change audited, and the sessions page marking the costs being
recalculated until the background re-pricing reaches them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from cloud.store import fleets
from cloud.store.audit import recent
from cloud.store.repricing import list_jobs
from cloud.store.sessions import edge_known
from cloud.store.tariffs import create_tariff, list_tariffs, reprice_all
from cloud.store.times import parse_time
from tests.cloud.test_sessions_store import T0, Site, flat
from tests.cloud.web import add_user, browser

TARIFF_ROW = re.compile(r'<tr class="tariff" data-tariff="(\d+)" data-scope="([^"]+)">')


@pytest.fixture
def two_fleets(engine: Engine) -> dict[str, int]:
    """Fleet Acme (ada admin, opal operator, vic viewer) with depot-1 and depot-2, two
    sessions at depot-1; fleet Bolt (bea admin) with bolt-1 and a default of its own; a
    tariff for every fleet."""
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    add_user(engine, "ada@acme.test", "admin", acme)
    add_user(engine, "opal@acme.test", "operator", acme)
    add_user(engine, "vic@acme.test", "viewer", acme)
    add_user(engine, "bea@bolt.test", "admin", bolt)
    for edge_id, fleet_id, name in [
        ("depot-1", acme, "Depot North"),
        ("depot-2", acme, "Depot South"),
        ("bolt-1", bolt, "Bolt HQ"),
    ]:
        fleets.assign_edge(engine, edge_id, fleet_id, site_name=name)
    every = create_tariff(engine, flat("0.30", T0 - timedelta(days=60), name="cloud standard"))
    theirs = create_tariff(
        engine, flat("0.25", T0 - timedelta(days=60), fleet_id=bolt, name="bolt rate")
    )
    depot = Site(engine, "depot-1")
    depot.session(1, T0 + timedelta(days=1), energy_wh=10_000)
    depot.session(2, T0 + timedelta(days=40), energy_wh=10_000)  # April
    assert every.tariff is not None and theirs.tariff is not None
    return {"acme": acme, "bolt": bolt, "every": every.tariff.id, "theirs": theirs.tariff.id}


def tariff_form(**fields: Any) -> dict[str, Any]:
    """The add form as a person fills it: a fleet default with a night band."""
    return {
        "name": "acme home charging",
        "scope": "fleet",
        "price": "0.32",
        "currency": "EUR",
        "minor_unit_digits": "2",
        "time_zone": "UTC",
        "valid_from": "2026-03-01T00:00",
        "valid_until": "",
        "band-0-days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "band-0-start": "22:00",
        "band-0-end": "06:00",
        "band-0-price": "0.24",
    } | fields


def actions(engine: Engine, fleet_id: int) -> list[tuple[str, str, str]]:
    return [
        (entry.actor, entry.action, entry.target)
        for entry in recent(engine, fleet_id)
        if entry.action.startswith("tariff.")
    ]


async def test_a_fleet_sees_its_tariffs_and_every_fleets_never_anothers(
    engine: Engine, two_fleets: dict[str, int]
) -> None:
    async with browser(engine) as viewer:
        await viewer.sign_in("vic@acme.test")
        overview = await viewer.get("/web/")
        assert '<a href="/web/tariffs">Tariffs</a>' in overview.text
        page = await viewer.get("/web/tariffs")
    assert page.status_code == 200
    assert TARIFF_ROW.findall(page.text) == [(str(two_fleets["every"]), "every")]
    assert "cloud standard" in page.text and "0.3 EUR" in page.text
    assert "bolt rate" not in page.text
    # Viewers read; the forms are an admin's.
    assert 'id="add-tariff"' not in page.text and "Change, end or remove" not in page.text
    async with browser(engine) as admin:
        await admin.sign_in("bea@bolt.test")
        theirs = await admin.get("/web/tariffs")
    assert [scope for _, scope in TARIFF_ROW.findall(theirs.text)] == ["every", "fleet"]
    assert "bolt rate" in theirs.text and 'id="add-tariff"' in theirs.text


async def test_an_admin_adds_a_fleet_tariff_and_its_costs_are_recalculated_meanwhile(
    engine: Engine, two_fleets: dict[str, int]
) -> None:
    acme = two_fleets["acme"]
    async with browser(engine) as admin:
        await admin.sign_in("ada@acme.test")
        form = await admin.get("/web/tariffs/new")
        assert form.status_code == 200 and 'name="band-0-days"' in form.text
        added = await admin.post("/web/tariffs", tariff_form())
        assert added.status_code == 303 and added.headers["location"] == "/web/tariffs"
        page = await admin.get("/web/tariffs")
        rows = TARIFF_ROW.findall(page.text)
        assert [scope for _, scope in rows] == ["every", "fleet"]
        assert "every day 22:00\u201306:00: 0.24" in page.text and "0.32 EUR" in page.text
        # Its sessions are priced again in the background; until then the page says so.
        assert 'id="repricing"' in page.text and "being priced again" in page.text
        sessions = await admin.get("/web/sessions?edge=depot-1&sums=1")
        assert sessions.text.count("cost being recalculated") >= 2
        exported = await admin.get("/web/sessions.csv?edge=depot-1")
        assert [line.split(",")[-1] for line in exported.text.splitlines()[1:]] == [
            "recalculating",
            "recalculating",
        ]
        assert reprice_all(engine) == 2
        priced = await admin.get("/web/sessions?edge=depot-1&sums=1")
        assert "cost being recalculated" not in priced.text
        # 10 kWh between 10:00 and 11:00: the day price, 3.20.
        assert priced.text.count("3.20 EUR") == 2
        exported = await admin.get("/web/sessions.csv?edge=depot-1")
        assert exported.text.splitlines()[1].endswith(",priced")
    (added_tariff,) = [t for t in list_tariffs(engine, fleet_id=acme) if t.spec.fleet_id == acme]
    spec = added_tariff.spec
    assert (spec.price, spec.currency, spec.valid_from) == (
        320_000,
        "EUR",
        parse_time("2026-03-01T00:00:00Z"),
    )
    assert [(sorted(b.days), b.start_minute, b.end_minute, b.price) for b in spec.bands] == [
        (list(range(7)), 22 * 60, 6 * 60, 240_000)
    ]
    assert actions(engine, acme) == [("ada@acme.test", "tariff.add", f"tariff {added_tariff.id}")]


async def test_every_field_is_checked_and_a_wrong_form_stores_nothing(
    engine: Engine, two_fleets: dict[str, int]
) -> None:
    overlapping = {
        "band-1-days": ["mon"],
        "band-1-start": "05:00",
        "band-1-end": "07:00",
        "band-1-price": "0.2",
    }
    refusals = [
        (tariff_form(**overlapping), "overlap on mon at 05:00"),
        (tariff_form(price="0"), "Price: a price per kWh is more than 0"),
        (tariff_form(price="-1"), "Price: a price per kWh"),
        (tariff_form(price="lots"), "Price: a price per kWh such as 0.32"),
        (tariff_form(**{"band-0-price": "0"}), "Band 1: a price per kWh is more than 0"),
        (tariff_form(currency="EURO"), "three capital letters"),
        (tariff_form(currency=""), "three capital letters"),
        (tariff_form(valid_from=""), "Valid from: give a date and time"),
        (tariff_form(valid_from="tomorrow"), "Valid from: a date and time"),
        (tariff_form(valid_until="2026-02-01T00:00"), "ends after it starts"),
        (tariff_form(time_zone="Mars/Olympus"), "is not a time zone"),
        (tariff_form(**{"band-0-days": []}), "Band 1: tick at least one day"),
        (tariff_form(**{"band-0-start": "7pm"}), "Band 1: &#39;7pm&#39; is not a time of day"),
        (tariff_form(name=""), "Name: give the tariff a name"),
        (tariff_form(scope="bolt-1"), "Scope: choose the fleet or one of its sites"),
        (tariff_form(minor_unit_digits="7"), "Minor unit: 0 to 4 digits"),
    ]
    async with browser(engine) as admin:
        await admin.sign_in("ada@acme.test")
        await admin.get("/web/tariffs/new")
        for form, message in refusals:
            answer = await admin.post("/web/tariffs", form)
            assert answer.status_code == 422, (form, answer.text)
            assert message in answer.text, (message, answer.text)
            # The form comes back as given, to be corrected.
            assert 'id="form-errors"' in answer.text
        long = await admin.post("/web/tariffs", tariff_form(name="x" * 300))
        assert long.status_code == 422
    # An admin of the default fleet naming a site no one has: no tariff, and no site made.
    add_user(engine, "dee@default.test", "admin", 1)
    async with browser(engine) as default_admin:
        await default_admin.sign_in("dee@default.test")
        await default_admin.get("/web/tariffs/new")
        ghost = await default_admin.post("/web/tariffs", tariff_form(scope="ghost-site"))
        assert ghost.status_code == 422 and "Scope: choose the fleet" in ghost.text
    assert not edge_known(engine, "ghost-site")
    assert len(list_tariffs(engine)) == 2 and list_jobs(engine) == []
    assert actions(engine, two_fleets["acme"]) == []


async def test_only_admins_change_tariffs_with_the_csrf_token_and_only_their_fleets(
    engine: Engine, two_fleets: dict[str, int]
) -> None:
    for email in ("vic@acme.test", "opal@acme.test"):
        async with browser(engine) as person:
            await person.sign_in(email)
            await person.get("/web/tariffs")
            assert (await person.get("/web/tariffs/new")).status_code == 403
            refused = await person.post("/web/tariffs", tariff_form())
            assert refused.status_code == 403, email
    async with browser(engine) as admin:
        await admin.sign_in("ada@acme.test")
        await admin.get("/web/tariffs")
        no_token = await admin.client.post("/web/tariffs", data=tariff_form())
        forged = await admin.client.post("/web/tariffs", data=tariff_form(csrf_token="guess"))
        assert no_token.status_code == forged.status_code == 403
        # Another fleet's tariff, and the one for every fleet, are none of this fleet's.
        for tariff_id in (two_fleets["theirs"], two_fleets["every"], 999, 2**40):
            for path in (f"/web/tariffs/{tariff_id}", f"/web/tariffs/{tariff_id}/remove"):
                if path.endswith("remove"):
                    answer = await admin.post(path, {})
                else:
                    answer = await admin.get(path)
                assert answer.status_code == 404, path
            ended = await admin.post(f"/web/tariffs/{tariff_id}/end", {"until": "2026-05-01T00:00"})
            changed = await admin.post(f"/web/tariffs/{tariff_id}", tariff_form())
            assert ended.status_code == changed.status_code == 404
    assert len(list_tariffs(engine)) == 2
    assert [t.spec.valid_until for t in list_tariffs(engine)] == [None, None]
    assert actions(engine, two_fleets["acme"]) == []


async def test_an_admin_changes_ends_and_removes_a_sites_tariff_each_audited(
    engine: Engine, two_fleets: dict[str, int]
) -> None:
    acme = two_fleets["acme"]
    async with browser(engine) as admin:
        await admin.sign_in("ada@acme.test")
        await admin.get("/web/tariffs/new")
        site_form = tariff_form(scope="depot-1", name="north own", price="0.50")
        site_form |= {"band-0-days": [], "band-0-start": "", "band-0-end": "", "band-0-price": ""}
        assert (await admin.post("/web/tariffs", site_form)).status_code == 303
        (own,) = [t for t in list_tariffs(engine, fleet_id=acme) if t.spec.edge_id == "depot-1"]
        edit = await admin.get(f"/web/tariffs/{own.id}")
        assert edit.status_code == 200
        assert '<option value="depot-1" selected>Depot North only</option>' in edit.text
        assert 'name="price" value="0.5"' in edit.text
        changed = await admin.post(f"/web/tariffs/{own.id}", site_form | {"price": "0.40"})
        assert changed.status_code == 303
        ended = await admin.post(f"/web/tariffs/{own.id}/end", {"until": "2026-04-01T00:00"})
        assert ended.status_code == 303
        reprice_all(engine)
        page = await admin.get("/web/tariffs")
        assert "ended on 2026-04-01 00:00Z" in page.text
        # March at the site's own 0.40; April, after its end, at every fleet's 0.30.
        sessions = await admin.get("/web/sessions?edge=depot-1")
        assert "4.00 EUR" in sessions.text and "3.00 EUR" in sessions.text
        wrong_end = await admin.post(f"/web/tariffs/{own.id}/end", {"until": "yesterday"})
        assert wrong_end.status_code == 422 and "a date and time" in wrong_end.text
        removed = await admin.post(f"/web/tariffs/{own.id}/remove", {})
        assert removed.status_code == 303
        reprice_all(engine)
        sessions = await admin.get("/web/sessions?edge=depot-1")
        assert sessions.text.count("3.00 EUR") == 2
    assert actions(engine, acme) == [
        ("ada@acme.test", "tariff.remove", f"tariff {own.id}"),
        ("ada@acme.test", "tariff.end", f"tariff {own.id}"),
        ("ada@acme.test", "tariff.change", f"tariff {own.id}"),
        ("ada@acme.test", "tariff.add", f"tariff {own.id}"),
    ]
    detail = next(entry.detail for entry in recent(engine, acme) if entry.action == "tariff.end")
    assert detail is not None and detail["valid_until"] == "2026-04-01T00:00:00+00:00"
