"""The Sessions page of the fleet web view through the real ASGI app on SQLite and
PostgreSQL: filters as a plain GET form, the next-page link, sums, the month's state, the
CSV of exactly the filtered sessions, a session's curve, and one fleet never seeing
another's sessions whatever the query string says."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from html import unescape
from itertools import count

import pytest
from sqlalchemy import Engine

from cloud.settings import CloudSettings
from cloud.store import fleets
from cloud.store.ingest import record_status
from cloud.store.tariffs import create_tariff
from cloud.store.times import parse_time
from tests.cloud.payloads import status
from tests.cloud.test_sessions_store import T0, Site, flat
from tests.cloud.web import Browser, add_user, browser

ROW = re.compile(r'<tr class="session" data-edge="([^"]+)" data-transaction="(-?\d+)">')
NEXT = re.compile(r'<a href="([^"]+)" id="next-page"')
APRIL = parse_time("2026-04-01T00:00:00Z")


def settings() -> CloudSettings:
    return CloudSettings(api={"token": "machine-token"}, web={}, sessions={"time_zone": "UTC"})


@pytest.fixture
def two_fleets(engine: Engine) -> tuple[int, int]:
    """Fleet Acme (vic, viewer) with depot-1 (five sessions in March, cards A and B of
    account ACC-1, the third recorded offline, with meter samples) and depot-2 (one
    session); fleet Bolt (bob) with bolt-1 (one session, card A too)."""
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    add_user(engine, "vic@acme.test", "viewer", acme)
    add_user(engine, "bob@bolt.test", "viewer", bolt)
    for edge_id, fleet_id, name in [
        ("depot-1", acme, "Depot North"),
        ("depot-2", acme, "Depot South"),
        ("bolt-1", bolt, "Bolt HQ"),
    ]:
        fleets.assign_edge(engine, edge_id, fleet_id, site_name=name)
    create_tariff(engine, flat("0.30", T0 - timedelta(days=30)))
    depot = Site(engine, "depot-1")
    for number in range(1, 6):
        depot.session(
            number,
            T0 + timedelta(days=number),
            energy_wh=1000 * number,
            card="CARD-A" if number % 2 else "CARD-B",
            parent="ACC-1",
            samples=4 if number == 3 else 0,
            received=timedelta(hours=2) if number == 3 else timedelta(seconds=1),
        )
    Site(engine, "depot-2").session(1, T0 + timedelta(days=10), card="CARD-C")
    Site(engine, "bolt-1").session(77, T0 + timedelta(days=2), card="CARD-A", parent="BOLT-ACC")
    return acme, bolt


def shown(page: str) -> list[tuple[str, int]]:
    return [(edge, int(transaction)) for edge, transaction in ROW.findall(page)]


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def every_page(person: Browser, path: str) -> list[tuple[str, int]]:
    rows: list[tuple[str, int]] = []
    while True:
        page = await person.get(path)
        assert page.status_code == 200, page.text
        rows += shown(page.text)
        found = NEXT.search(page.text)
        if found is None:
            return rows
        path = unescape(found.group(1))


async def test_a_viewer_sees_the_fleets_sessions_with_cost_and_the_offline_marker(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine, settings()) as person:
        await person.sign_in("vic@acme.test")
        overview = await person.get("/web/")
        assert '<a href="/web/sessions">Sessions</a>' in overview.text
        unfiltered = await person.get("/web/sessions")
        # The whole fleet's sums read every session it had: only when asked.
        assert 'id="sums-card"' not in unfiltered.text
        assert '<a href="/web/sessions?sums=1">' in unfiltered.text
        page = await person.get("/web/sessions?sums=1")
    assert page.status_code == 200
    assert shown(page.text) == [("depot-2", 1)] + [("depot-1", n) for n in (5, 4, 3, 2, 1)]
    assert "Bolt HQ" not in page.text and "bolt-1" not in page.text and "BOLT" not in page.text
    # 5 kWh at 0.30: 1.50 EUR; only the third session was recorded offline.
    assert "5.000 kWh" in page.text and "1.50 EUR" in page.text
    assert page.text.count("recorded offline, synced at") == 1
    assert "recorded offline, synced at 2026-03-05 13:00:00Z" in page.text
    # The form is a plain GET form: it works without JavaScript.
    assert re.search(r'<form method="get" action="/web/sessions"', page.text)
    # Sums per card, account and month, over every filtered session.
    assert re.search(r'data-sum="card" data-key="CARD-A">\s*<td>CARD-A</td><td>3</td>', page.text)
    assert re.search(r'data-sum="account" data-key="ACC-1">\s*<td>ACC-1</td><td>5</td>', page.text)
    assert re.search(
        r'data-sum="month" data-key="2026-03">\s*<td>2026-03</td><td>6</td>', page.text
    )


async def test_signing_in_is_needed_for_the_page_and_the_csv(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine, settings()) as person:
        for path in ("/web/sessions", "/web/sessions.csv", "/web/sessions/depot-1/1"):
            answer = await person.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/web/login?next=")
        # The machine token opens the API's CSV, not the view's.
        token = {"Authorization": "Bearer machine-token"}
        assert (await person.get("/web/sessions.csv", headers=token)).status_code == 303


async def test_another_fleets_sessions_are_never_shown_whatever_the_query(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine, settings()) as person:
        await person.sign_in("vic@acme.test")
        theirs = await person.get("/web/sessions?edge=bolt-1")
        assert theirs.status_code == 404 and "Bolt HQ" not in theirs.text
        assert (await person.get("/web/sessions.csv?edge=bolt-1")).status_code == 404
        # Their account and card name no session of this fleet.
        by_account = await person.get("/web/sessions?account=BOLT-ACC")
        assert by_account.status_code == 200 and shown(by_account.text) == []
        exported = await person.get("/web/sessions.csv?account=BOLT-ACC")
        assert exported.status_code == 200 and csv_rows(exported.text) == []
        by_card = await person.get("/web/sessions.csv?card=CARD-A")
        assert {row["edge_id"] for row in csv_rows(by_card.text)} == {"depot-1"}
        for path in ("/web/sessions/bolt-1/77", "/web/sessions/depot-1/77", "/web/sessions/x/1"):
            detail = await person.get(path)
            assert detail.status_code == 404, path
            assert "CARD-A" not in detail.text
        assert (await person.get("/web/sessions?edge=bolt-1&month=2026-03")).status_code == 404
    async with browser(engine, settings()) as other:
        await other.sign_in("bob@bolt.test")
        page = await other.get("/web/sessions")
        assert shown(page.text) == [("bolt-1", 77)]
        assert (await other.get("/web/sessions/bolt-1/77")).status_code == 200
        assert (await other.get("/web/sessions/depot-1/1")).status_code == 404


async def test_filters_pages_and_the_csv_are_exactly_the_rows_shown(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine, settings()) as person:
        await person.sign_in("vic@acme.test")
        everything = await every_page(person, "/web/sessions?limit=2")
        # Sums (of every filtered session) are on the first page; later pages stay cheap.
        first = await person.get("/web/sessions?limit=2&sums=1")
        assert 'id="sums-card"' in first.text
        found = NEXT.search(first.text)
        assert found is not None
        second = await person.get(unescape(found.group(1)))
        assert 'id="sums-card"' not in second.text and 'id="sums-elsewhere"' in second.text
        assert everything == [("depot-2", 1)] + [("depot-1", n) for n in (5, 4, 3, 2, 1)]
        for query, expected in [
            ("edge=depot-1&card=CARD-A", [5, 3, 1]),
            ("edge=depot-1&charger=CP-1&account=ACC-1", [5, 4, 3, 2, 1]),
            ("edge=depot-1&from=2026-03-04&to=2026-03-06", [3, 2]),
            ("edge=depot-1&month=2026-03", [5, 4, 3, 2, 1]),
            ("edge=depot-1&month=2026-04", []),
        ]:
            rows = await every_page(person, f"/web/sessions?{query}&limit=2")
            assert rows == [("depot-1", n) for n in expected], query
            page = await person.get(f"/web/sessions?{query}&limit=2")
            link = re.search(r'<a href="([^"]+)" id="csv-link"', page.text)
            assert link is not None
            # The link carries the filters, not the page size or cursor: every row.
            assert "limit" not in link.group(1) and "cursor" not in link.group(1)
            exported = await person.get(unescape(link.group(1)))
            assert exported.status_code == 200
            assert exported.headers["content-type"].startswith("text/csv")
            assert "attachment" in exported.headers["content-disposition"]
            exported_rows = csv_rows(exported.text)
            assert [(r["edge_id"], int(r["transaction_id"])) for r in exported_rows] == rows
        offline = csv_rows((await person.get("/web/sessions.csv?edge=depot-1&card=CARD-A")).text)
        assert [r["recorded_offline"] for r in offline] == ["no", "yes", "no"]
        assert [r["cost"] for r in offline] == ["1.50", "0.90", "0.30"]
        # The filters stay in the form.
        page = await person.get("/web/sessions?edge=depot-1&card=CARD-A")
        assert '<option value="depot-1" selected>Depot North</option>' in page.text
        assert 'name="card" value="CARD-A"' in page.text
        for bad in ("month=2026-13", "from=yesterday", "month=2026-03&from=2026-03-01", "cursor=x"):
            refused = await person.get(f"/web/sessions?{bad}")
            assert refused.status_code == 422, bad


async def test_a_month_of_a_site_is_provisional_with_the_reason_then_final(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    record_status(engine, "depot-1", status("offline", backlog=4, oldest_age_s=600.0), now=APRIL)
    async with browser(engine, settings()) as person:
        await person.sign_in("vic@acme.test")
        page = await person.get("/web/sessions?edge=depot-1&month=2026-03")
        assert 'id="month-state" data-state="provisional"' in page.text
        assert "edge offline since 2026-04-01T00:00:00.000Z" in page.text
        assert "backlog 4 events" in page.text
        # Without a month, or without a site, there is no month to close.
        assert 'id="month-state"' not in (await person.get("/web/sessions?edge=depot-1")).text
        assert 'id="month-state"' not in (await person.get("/web/sessions?month=2026-03")).text
        # Back online: data past the month's end, the backlog empty.
        site = Site(engine, "depot-1")
        site.seqs = count(15)  # after the fixture's 14 events (5 sessions, 4 samples)
        site.send(
            {"kind": "charger.connection", "charger_id": "CP-1", "connected": True},
            at=APRIL + timedelta(hours=1),
        )
        record_status(
            engine, "depot-1", status("online", backlog=0), now=APRIL + timedelta(hours=2)
        )
        final = await person.get("/web/sessions?edge=depot-1&month=2026-03")
        assert 'id="month-state" data-state="final"' in final.text, final.text


async def test_a_sessions_detail_draws_its_curve_from_embedded_data_with_a_table_fallback(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine, settings()) as person:
        await person.sign_in("vic@acme.test")
        page = await person.get("/web/sessions/depot-1/3")
        bare = await person.get("/web/sessions/depot-1/1")
    assert page.status_code == 200
    assert "recorded offline, synced at" in page.text
    data = re.search(
        r'<script type="application/json" id="session-curve-data">(.*?)</script>', page.text
    )
    assert data is not None
    curve = json.loads(data.group(1))
    assert curve["energy_wh"] == [600, 1200, 1800, 2400]
    assert curve["power_w"] == [7400.0] * 4 and len(curve["at"]) == 4
    assert "vendor/uPlot.iife.min.js" in page.text and "session-curve.js" in page.text
    assert page.text.count("</tr>", page.text.index('id="samples"')) == 5  # header + 4
    assert "1200 Wh" in page.text
    assert bare.status_code == 200 and "No meter samples" in bare.text
    assert "session-curve-data" not in bare.text
