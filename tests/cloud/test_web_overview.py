"""The fleet overview of a fleet larger than a page, through the real ASGI app on SQLite and
PostgreSQL: sites needing attention on the first page, the rest a page at a time, totals
always of the whole fleet; and the summaries a replica keeps by each edge's change marker,
never shown stale after a change, whichever way the change was stored."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine

from cloud.store import fleets
from cloud.store.ingest import record_rejection
from cloud.store.overview import SummaryCache, fleet_edges
from cloud.store.users import list_users
from cloud.web.app import create_web_context, create_web_router
from tests.cloud.web import (
    Browser,
    add_user,
    browser,
    charger_events,
    set_presence,
    sync_edge,
    web_settings,
)

PAGE = 10
SITES = 13  # a page and a bit


def rows_of(page: str) -> list[tuple[str, str]]:
    return re.findall(r'data-edge="([^"]+)" data-state="([^"]+)"', page)


@pytest.fixture
def large_fleet(engine: Engine) -> int:
    """Fleet Acme of 13 sites, each with one charger; site-03 and site-11 offline (they
    need attention); fleet Bolt beside it."""
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    add_user(engine, "vic@acme.test", "viewer", acme)
    for number in range(SITES):
        edge_id = f"site-{number:02d}"
        fleets.assign_edge(engine, edge_id, acme, site_name=f"Site {number:02d}")
        sync_edge(engine, edge_id, charger_events("CP-1", [(1, "Available", "NoError")]))
        state = "offline" if number in (3, 11) else "online"
        set_presence(engine, edge_id, state, backlog=0, disk_free_mb=9000.0)
    fleets.assign_edge(engine, "bolt-1", bolt, site_name="Bolt HQ")
    set_presence(engine, "bolt-1", "offline")
    return acme


async def test_the_overview_shows_a_page_of_sites_attention_first_and_totals_of_the_fleet(
    engine: Engine, large_fleet: int
) -> None:
    async with browser(engine, web_settings(overview_page_size=PAGE)) as person:
        await person.sign_in("vic@acme.test")
        first = await person.get("/web/")
        second = await person.get("/web/?page=2")
        junk = await person.get("/web/?page=%2B1%27")
        past = await person.get("/web/?page=999999999")
    assert first.status_code == second.status_code == junk.status_code == past.status_code == 200
    shown = rows_of(first.text)
    assert len(shown) == PAGE
    assert shown[:2] == [("site-03", "offline"), ("site-11", "offline")]
    rest = rows_of(second.text)
    assert len(rest) == SITES - PAGE
    every = {edge_id for edge_id, _ in shown + rest}
    assert every == {f"site-{number:02d}" for number in range(SITES)}
    for page in (first, second):
        # The totals are of the whole fleet on every page, never of the page.
        assert re.search(
            r"<dt>Sites</dt><dd>13 <span class=\"hint\">11 online, 2 offline", page.text
        )
        assert re.search(r"<dt>Chargers</dt><dd>13</dd>", page.text)
        assert "Bolt HQ" not in page.text and "bolt-1" not in page.text
    assert "Sites 1&ndash;10 of 13" in first.text and 'href="/web/?page=2" rel="next"' in first.text
    assert "Sites 11&ndash;13 of 13" in second.text and 'rel="prev"' in second.text
    assert 'sse-connect="/web/live?view=overview&amp;page=2"' in second.text
    # No page number: the first page; past the end: the last.
    assert rows_of(junk.text) == shown
    assert rows_of(past.text) == rest


async def test_a_live_overview_pushes_the_page_it_shows(engine: Engine, large_fleet: int) -> None:
    settings = web_settings(overview_page_size=PAGE).web
    context = create_web_context(settings, engine)
    create_web_router(settings, engine, context)
    (viewer,) = list_users(engine, large_fleet)
    live = context.live_views["overview"]
    second = await live.render(viewer, {"view": "overview", "page": "2"})
    first = await live.render(viewer, {"view": "overview"})
    assert len(rows_of(second["edges"])) == SITES - PAGE
    assert len(rows_of(first["edges"])) == PAGE
    assert "<dt>Sites</dt><dd>13 " in second["totals"]


async def overview_rows(person: Browser) -> str:
    page = await person.get("/web/")
    assert page.status_code == 200
    return page.text


def row_of(page: str, edge_id: str) -> str:
    found = re.search(rf'<tr class="edge [^"]*" data-edge="{edge_id}".*?</tr>', page, re.S)
    assert found is not None, edge_id
    return found.group(0)


async def test_a_kept_row_is_never_shown_stale_after_a_change(
    engine: Engine, large_fleet: int
) -> None:
    async with browser(engine, web_settings(overview_page_size=PAGE)) as person:
        await person.sign_in("vic@acme.test")
        before = await overview_rows(person)
        assert 'data-edge="site-05" data-state="online"' in before
        assert "Available 1" in row_of(before, "site-05")
        # A status (presence) through ingest.
        set_presence(engine, "site-05", "offline")
        page = await overview_rows(person)
        assert 'data-edge="site-05" data-state="offline"' in page
        # A batch of events: a connector faulted.
        sync_edge(engine, "site-07", [charger_events("CP-1", [(1, "Faulted", "X")])[2]], 4)
        page = await overview_rows(person)
        assert "Faulted 1" in row_of(page, "site-07")
        assert "1 connectors faulted" in row_of(page, "site-07")
        # A refused payload from the edge.
        record_rejection(engine, "site-08", "invalid", "{}")
        page = await overview_rows(person)
        assert "1 payloads refused" in row_of(page, "site-08")
        # An operator renames the site.
        fleets.assign_edge(engine, "site-09", large_fleet, site_name="Depot Renamed")
        page = await overview_rows(person)
        assert "Depot Renamed" in row_of(page, "site-09")
        # An edge moved to another fleet leaves the page and its totals.
        other = fleets.add_fleet(engine, "Elsewhere").fleet_id
        fleets.assign_edge(engine, "site-10", other)
        page = await overview_rows(person)
        assert "site-10" not in page
        assert re.search(r"<dt>Sites</dt><dd>12 ", page)


def test_a_kept_summary_is_read_again_only_when_its_edge_changed(
    engine: Engine, large_fleet: int
) -> None:
    cache = SummaryCache()
    first = fleet_edges(engine, large_fleet, cache)
    assert cache.rows_read == SITES
    again = fleet_edges(engine, large_fleet, cache)
    assert again == first and cache.rows_read == SITES  # nothing read twice
    set_presence(engine, "site-04", "offline")
    changed = fleet_edges(engine, large_fleet, cache)
    assert cache.rows_read == SITES + 1
    assert {summary.edge_id: summary.state for summary in changed}["site-04"] == "offline"
    assert changed == fleet_edges(engine, large_fleet)  # as read without a cache
    # Another fleet's edges are never in this fleet's summaries, kept or not.
    assert all(summary.edge_id.startswith("site-") for summary in changed)
