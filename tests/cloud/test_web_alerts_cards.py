"""The alerts and cards pages through the real ASGI app on SQLite and PostgreSQL: what a
fleet's user sees (never another fleet's alerts, cards or refusals), the presence
history on the site page, cards added and blocked by operators only, with the CSRF token,
into the same card list the API serves and into the audit log."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from cloud.store import alerts as alerts_store
from cloud.store import fleets
from cloud.store.alerts import Clearing, NewAlert
from cloud.store.audit import recent
from cloud.store.desired import set_card_list
from cloud.store.overview import edge_revisions
from cloud.store.times import utc_now
from contract.protocol import CardEntry
from tests.cloud import payloads
from tests.cloud.web import add_user, browser, charger_events, set_presence, sync_edge

TOKEN = {"Authorization": "Bearer machine-token"}


@pytest.fixture
def two_fleets(engine: Engine) -> tuple[int, int]:
    """Fleet Acme (ann operator, vic viewer) with depot-1; fleet Bolt (bob) with bolt-1.
    Each edge has an open alert, a cleared one, a card list and a refused card."""
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    add_user(engine, "ann@acme.test", "operator", acme)
    add_user(engine, "vic@acme.test", "viewer", acme)
    add_user(engine, "bob@bolt.test", "operator", bolt)
    for edge_id, fleet_id, name in [("depot-1", acme, "Depot North"), ("bolt-1", bolt, "Bolt HQ")]:
        fleets.assign_edge(engine, edge_id, fleet_id, site_name=name)
        prefix = edge_id.upper().replace("-", "")
        sync_edge(
            engine,
            edge_id,
            [
                *charger_events(f"{prefix}-CP", [(1, "Available", "NoError")]),
                payloads.card_used(
                    f"{prefix}-STRANGER", status="Invalid", reason=f"{prefix} not in the card table"
                ),
            ],
        )
        set_presence(engine, edge_id, "online", backlog=0)
        set_presence(engine, edge_id, "offline")
        set_card_list(engine, edge_id, [CardEntry(id_tag=f"{prefix}-KEEP", label="fleet car")])
        now = utc_now()
        raised, _ = alerts_store.raise_and_clear(
            engine,
            [
                NewAlert(
                    "edge_offline", edge_id, "", now - timedelta(minutes=20), f"{prefix} gone"
                ),
                NewAlert("backlog_old", edge_id, "", now - timedelta(hours=2), f"{prefix} behind"),
            ],
            [],
            now,
            notify=True,
        )
        backlog_alert = raised[1][0]
        alerts_store.raise_and_clear(
            engine, [], [Clearing(backlog_alert, f"{prefix} caught up")], now, notify=False
        )
    return acme, bolt


async def test_the_alerts_page_lists_open_then_cleared_alerts_of_ones_fleet_only(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as person:
        await person.sign_in("vic@acme.test")
        page = await person.get("/web/alerts")
        badge = await person.get("/web/alerts/badge", headers={"HX-Request": "true"})
    assert page.status_code == 200
    rows = re.findall(r'data-kind="([a-z_]+)" data-state="(open|cleared)"', page.text)
    assert rows == [("edge_offline", "open"), ("backlog_old", "cleared")]
    assert "DEPOT1 gone" in page.text and "DEPOT1 caught up" in page.text
    assert "due" in page.text  # the webhook's notice of the open alert is due
    assert "BOLT1" not in page.text and "bolt-1" not in page.text
    assert 'data-open-alerts="1"' in badge.text
    assert 'hx-get="/web/alerts/badge"' in page.text  # the count in every page's navigation


async def test_alerts_are_read_within_a_fleet_by_the_store(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    acme, bolt = two_fleets
    theirs = alerts_store.list_alerts(engine, fleet_id=bolt)
    assert {alert.edge_id for alert in theirs} == {"bolt-1"} and len(theirs) == 2
    assert alerts_store.count_open(engine, acme) == 1
    assert len(alerts_store.list_alerts(engine)) == 4  # the API's, unscoped


async def test_a_raised_or_cleared_alert_moves_its_edges_change_marker(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    """What wakes the live alerts page on every replica (cloud/web/live.py)."""
    before = edge_revisions(engine)["depot-1"][1]
    theirs = edge_revisions(engine)["bolt-1"][1]
    now = utc_now()
    raised, _ = alerts_store.raise_and_clear(
        engine,
        [NewAlert("connector_faulted", "depot-1", "CP/1", now, "Faulted")],
        [],
        now,
        notify=False,
    )
    middle = edge_revisions(engine)["depot-1"][1]
    alerts_store.raise_and_clear(
        engine, [], [Clearing(raised[0][0], "Available")], now, notify=False
    )
    after = edge_revisions(engine)["depot-1"][1]
    assert before < middle < after
    assert edge_revisions(engine)["bolt-1"][1] == theirs  # another edge's pages sleep on


async def test_the_site_page_lists_the_edges_presence_changes(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as person:
        await person.sign_in("vic@acme.test")
        page = await person.get("/web/sites/depot-1")
    assert page.status_code == 200
    assert re.findall(r'<li data-online="(true|false)">', page.text) == ["false", "true"]


async def test_the_cards_page_shows_versions_and_refusals_of_ones_fleet_only(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as person:
        await person.sign_in("vic@acme.test")
        overview = await person.get("/web/cards")
        edge_page = await person.get("/web/cards/depot-1")
        theirs = await person.get("/web/cards/bolt-1")
        nowhere = await person.get("/web/cards/no-such-edge")
    assert overview.status_code == 200
    assert re.findall(
        r'data-edge="([^"]+)" data-wanted="(\d*)" data-applied="(\d*)"', overview.text
    ) == [("depot-1", "1", "")]
    assert "DEPOT1 not in the card table" in overview.text and "BOLT1" not in overview.text
    assert 'data-card="DEPOT1-KEEP" data-status="Accepted"' in edge_page.text
    assert "DEPOT1-STRANGER" in edge_page.text
    assert 'name="action" value="add"' not in edge_page.text  # a viewer reads
    assert theirs.status_code == nowhere.status_code == 404
    assert "BOLT1-KEEP" not in theirs.text


async def test_an_operator_adds_and_blocks_cards_into_the_apis_list_and_the_audit_log(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    acme, _ = two_fleets
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        await person.get("/web/cards/depot-1")
        added = await person.post(
            "/web/card",
            {"action": "add", "site": "depot-1", "id_tag": "NEW-CARD", "label": "van 7"},
        )
        assert added.status_code == 303 and added.headers["location"] == "/web/cards/depot-1"
        card = await person.get("/web/card?id_tag=DEPOT1-KEEP")
        revision = re.search(r'name="revision" value="(\d+)"', card.text)
        assert revision is not None
        blocked = await person.post(
            "/web/card",
            {
                "action": "block",
                "site": "depot-1",
                "id_tag": "DEPOT1-KEEP",
                "revision": revision.group(1),
            },
        )
        assert blocked.status_code == 303
        page = await person.get("/web/cards/depot-1")
        assert 'data-card="NEW-CARD" data-status="Accepted"' in page.text
        assert 'data-card="DEPOT1-KEEP" data-status="Blocked"' in page.text
        bad = await person.post(
            "/web/card", {"action": "add", "site": "depot-1", "id_tag": "x" * 21}
        )
        assert bad.status_code == 422 and "1 to 20 characters" in bad.text
        api = await person.client.get("/api/edges/depot-1/cards", headers=TOKEN)
    listed = {card["id_tag"]: card for card in api.json()["cards"]}
    assert api.json()["version"] == 3
    assert listed["NEW-CARD"]["status"] == "Accepted" and listed["NEW-CARD"]["label"] == "van 7"
    assert listed["DEPOT1-KEEP"]["status"] == "Blocked"
    entries = [(e.actor, e.action, e.target) for e in recent(engine, acme) if e.action != "login"]
    assert entries == [
        ("ann@acme.test", "card.block", "depot-1/DEPOT1-KEEP"),
        ("ann@acme.test", "card.add", "depot-1/NEW-CARD"),
    ]


async def test_a_viewer_another_fleet_or_a_missing_csrf_token_changes_no_card(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as viewer:
        await viewer.sign_in("vic@acme.test")
        await viewer.get("/web/cards/depot-1")
        refused = await viewer.post(
            "/web/card", {"action": "add", "site": "depot-1", "id_tag": "VIC"}
        )
        assert refused.status_code == 403
    async with browser(engine) as operator:
        await operator.sign_in("ann@acme.test")
        await operator.get("/web/cards/depot-1")
        other_fleet = await operator.post(
            "/web/card", {"action": "add", "site": "bolt-1", "id_tag": "ANN"}
        )
        assert other_fleet.status_code == 404
        forged_form = {"action": "add", "site": "depot-1", "id_tag": "FORGED"}
        no_token = await operator.client.post("/web/card", data=forged_form)
        forged = await operator.client.post("/web/card", data=forged_form | {"csrf_token": "guess"})
        assert no_token.status_code == forged.status_code == 403
        for edge_id in ("depot-1", "bolt-1"):
            api = await operator.client.get(f"/api/edges/{edge_id}/cards", headers=TOKEN)
            assert api.json()["version"] == 1, edge_id
    actions = {entry.action for entry in recent(engine, two_fleets[0])}
    assert not any(action.startswith("card.") for action in actions)
