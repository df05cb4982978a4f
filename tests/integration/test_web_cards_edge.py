"""A card changed in the fleet web view reaches the site's real edge through a real
mosquitto, on SQLite and on PostgreSQL: added (limited to a charger), then blocked, each
a new list version the edge applies and reports back."""

from __future__ import annotations

import re

import httpx

from cloud.store import cards as cards_store
from cloud.store import fleet, fleets
from edge.simulator import SimulatedCharger
from tests.cloud.web import Browser, add_user
from tests.conftest import RunningCloud, RunningEdge
from tests.integration.test_sync_end_to_end import (  # noqa: F401 - the fixtures
    EDGE,
    cloud,
    edge_view,
    site,
)
from tests.waiting import eventually


async def test_a_card_changed_in_the_web_view_reaches_the_edge(
    cloud: RunningCloud,  # noqa: F811
    site: tuple[RunningEdge, SimulatedCharger],  # noqa: F811
) -> None:
    edge, _ = site
    engine = cloud.engine
    await eventually(lambda: (view := edge_view(engine)) is not None and view.online)
    await eventually(lambda: [c.charger_id for c in fleet.list_chargers(engine, EDGE)] == ["CP1"])
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    fleets.assign_edge(engine, EDGE, acme, site_name="Site 7")
    add_user(engine, "ann@acme.test", "operator", acme)

    def on_edge() -> tuple[str, frozenset[str]] | None:
        rows = edge.query("SELECT status FROM id_tags WHERE id_tag = 'WEB-1' AND source = 'cloud'")
        chargers = edge.query("SELECT charger_id FROM id_tag_chargers WHERE id_tag = 'WEB-1'")
        return (rows[0][0], frozenset(row[0] for row in chargers)) if rows else None

    def in_step() -> bool:
        (versions,) = cards_store.fleet_card_versions(engine, acme, EDGE)
        return versions.wanted_version is not None and versions.in_step

    async with httpx.AsyncClient(base_url=cloud.api_url, timeout=10) as http:
        ann = Browser(http)
        assert (await ann.sign_in("ann@acme.test")).status_code == 303
        await ann.get("/web/cards")
        added = await ann.post(
            "/web/card", {"action": "add", "id_tag": "WEB-1", "sites": EDGE, "chargers": "CP1"}
        )
        assert added.status_code == 303, added.text
        await eventually(lambda: on_edge() == ("Accepted", frozenset({"CP1"})), within=15)
        await eventually(in_step, within=15)

        page = await ann.get("/web/card?id_tag=WEB-1")
        revision = re.search(r'name="revision" value="(\d+)"', page.text)
        assert revision is not None
        blocked = await ann.post(
            "/web/card", {"action": "block", "id_tag": "WEB-1", "revision": revision.group(1)}
        )
        assert blocked.status_code == 303, blocked.text
        await eventually(lambda: on_edge() == ("Blocked", frozenset({"CP1"})), within=15)
        await eventually(in_step, within=15)
