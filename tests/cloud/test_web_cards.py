"""The cards pages through the real ASGI app on SQLite and PostgreSQL: the fleet's card
list (sites, filters, keyset pages, CSV), a card's page, changes across the fleet or at
one site (add, block, unblock, expire, limit to sites and chargers, remove), each a new
list version for every site it touches; two operators editing one card (the later is
refused with what changed, never overwriting); the API's If-Match; CSV imports previewed
and applied all or nothing, also hostile ones; roles, CSRF and fleets kept apart."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from cloud.store import cards as cards_store
from cloud.store import desired, fleets
from cloud.store.audit import recent
from contract.protocol import CardEntry
from tests.cloud import payloads
from tests.cloud.web import Browser, add_user, browser, charger_events, sync_edge, web_settings

TOKEN = {"Authorization": "Bearer machine-token"}


@pytest.fixture
def fleet(engine: Engine) -> int:
    """Acme: depot-1 (charger D1-CP, cards A-1..A-5, one refused card) and depot-2
    (D2-CP, card A-1 blocked); users ann and olga (operators), vic (viewer). Bolt:
    bolt-1 (B-CP, card BOLT-1), bob (operator)."""
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    add_user(engine, "ann@acme.test", "operator", acme)
    add_user(engine, "olga@acme.test", "operator", acme)
    add_user(engine, "vic@acme.test", "viewer", acme)
    add_user(engine, "bob@bolt.test", "operator", bolt)
    for edge_id, fleet_id, name, charger in (
        ("depot-1", acme, "Depot North", "D1-CP"),
        ("depot-2", acme, "Depot South", "D2-CP"),
        ("bolt-1", bolt, "Bolt HQ", "B-CP"),
    ):
        fleets.assign_edge(engine, edge_id, fleet_id, site_name=name)
        sync_edge(engine, edge_id, charger_events(charger, [(1, "Available", "NoError")]))
    sync_edge(
        engine,
        "depot-1",
        [payloads.card_used("A-3", status="Blocked", reason="blocked by the cloud's list")],
        first_seq=4,
    )
    desired.set_card_list(
        engine,
        "depot-1",
        [CardEntry(id_tag=f"A-{n}", label=f"car {n}", parent_id_tag="ACC") for n in range(1, 6)],
    )
    desired.set_card_list(engine, "depot-2", [CardEntry(id_tag="A-1", status="Blocked")])
    desired.set_card_list(engine, "bolt-1", [CardEntry(id_tag="BOLT-1", label="theirs")])
    return acme


def revision_of(page: httpx.Response) -> str:
    found = re.search(r'name="revision" value="(\d+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def listed(page: httpx.Response) -> list[tuple[str, str, str]]:
    """(card, statuses, sites) of each row of a card list."""
    return re.findall(r'data-card="([^"]+)" data-status="([^"]*)" data-sites="([^"]*)"', page.text)


def held(engine: Engine, edge_id: str) -> dict[str, CardEntry]:
    found = desired.current_card_list(engine, edge_id)
    return {card.id_tag: card for card in (found or (0, []))[1]}


def version(engine: Engine, edge_id: str) -> int:
    return (desired.current_card_list(engine, edge_id) or (0, []))[0]


async def upload(
    person: Browser, text: str | bytes, site: str = "", name: str = "cards.csv"
) -> httpx.Response:
    data = text.encode() if isinstance(text, str) else text
    return await person.client.post(
        "/web/card-import",
        data={"csrf_token": person.csrf, "site": site},
        files={"file": (name, data, "text/csv")},
    )


def counts(preview: httpx.Response) -> dict[str, int]:
    return {
        name: int(value)
        for name, value in re.findall(r'data-count="(\w+)"[^>]*>(\d+)<', preview.text)
    }


def bad_lines(preview: httpx.Response) -> dict[int, str]:
    return {
        int(line): reason
        for line, reason in re.findall(
            r'<tr data-line="(\d+)"><td class="line">\d+</td><td>(.*?)</td>', preview.text
        )
    }


def import_id(preview: httpx.Response) -> str:
    found = re.search(r'name="import_id" value="([0-9a-f]{32})"', preview.text)
    assert found is not None, preview.text
    return found.group(1)


async def test_the_fleet_list_shows_each_card_once_with_its_sites_a_page_at_a_time(
    engine: Engine, fleet: int
) -> None:
    async with browser(engine) as person:
        await person.sign_in("vic@acme.test")
        first = await person.get("/web/cards?limit=2")
        next_link = re.search(r'href="([^"]+)" id="next-page"', first.text)
        assert next_link is not None
        second = await person.get(next_link.group(1).replace("&amp;", "&"))
        blocked = await person.get("/web/cards?status=Blocked")
        searched = await person.get("/web/cards?q=car+4")
        site = await person.get("/web/cards/depot-2")
        theirs = await person.get("/web/cards?site=bolt-1")
    assert listed(first) == [
        ("A-1", "Accepted Blocked", "depot-1;depot-2"),
        ("A-2", "Accepted", "depot-1"),
    ]
    assert "<td>Depot North, Depot South</td>" in first.text  # the sites by name
    assert "differs by site" in first.text
    assert [row[0] for row in listed(second)] == ["A-3", "A-4"]
    assert [row[0] for row in listed(blocked)] == ["A-1"]
    assert [row[0] for row in listed(searched)] == ["A-4"]
    assert listed(site) == [("A-1", "Blocked", "depot-1;depot-2")]  # as depot-2 holds it
    assert 'id="list-version"' in site.text and "BOLT-1" not in first.text
    assert theirs.status_code == 404
    assert 'name="action" value="add"' not in first.text  # a viewer reads
    assert 'id="import-link"' not in first.text


async def test_a_cards_page_shows_each_sites_entry_and_why_a_site_refused_it(
    engine: Engine, fleet: int
) -> None:
    async with browser(engine) as person:
        await person.sign_in("vic@acme.test")
        card = await person.get("/web/card?id_tag=a-3")  # any case
        theirs = await person.get("/web/card?id_tag=BOLT-1")
        nowhere = await person.get("/web/card?id_tag=NOPE")
    assert card.status_code == 200
    assert re.findall(r'data-site="([^"]+)" data-status="(\w+)"', card.text) == [
        ("depot-1", "Accepted")
    ]
    assert 'data-refused="A-3"' in card.text and "blocked by the cloud&#39;s list" in card.text
    assert 'name="action" value="save"' not in card.text
    assert theirs.status_code == nowhere.status_code == 404 and "theirs" not in theirs.text


async def test_an_operator_adds_a_card_at_chosen_sites_limited_to_a_charger(
    engine: Engine, fleet: int
) -> None:
    before = {edge_id: version(engine, edge_id) for edge_id in ("depot-1", "depot-2")}
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        await person.get("/web/cards")
        added = await person.client.post(
            "/web/card",
            data={
                "csrf_token": person.csrf,
                "action": "add",
                "id_tag": "VAN-7",
                "status": "Accepted",
                "expiry_date": "2027-01-31",
                "parent_id_tag": "ACC",
                "label": "van 7",
                "chargers": "D1-CP",
                "sites": ["depot-1", "depot-2"],
            },
        )
        assert added.status_code == 303, added.text
        assert added.headers["location"] == "/web/card?id_tag=VAN-7"
        page = await person.get(added.headers["location"])
    assert re.findall(r'data-site="([^"]+)"', page.text) == ["depot-1", "depot-2"]
    wanted = CardEntry(
        id_tag="VAN-7",
        expiry_date="2027-01-31T00:00:00Z",
        parent_id_tag="ACC",
        label="van 7",
        chargers=["D1-CP"],
    )
    for edge_id in ("depot-1", "depot-2"):
        assert version(engine, edge_id) == before[edge_id] + 1
        assert held(engine, edge_id)["VAN-7"] == wanted
        sent = desired.card_list_to_send(engine, edge_id)
        assert sent is not None and wanted in sent.cards
    entries = [(e.action, e.target) for e in recent(engine, fleet) if e.action.startswith("card")]
    assert entries == [("card.add", "VAN-7")]


async def test_block_unblock_expire_and_remove_across_the_fleet_or_at_one_site(
    engine: Engine, fleet: int
) -> None:
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")

        async def act(action: str, site: str = "") -> httpx.Response:
            page = await person.get("/web/card?id_tag=A-1")
            form = {"action": action, "id_tag": "A-1", "revision": revision_of(page)}
            return await person.post("/web/card", form | ({"site": site} if site else {}))

        assert (await act("unblock", "depot-2")).headers["location"] == "/web/cards/depot-2"
        assert {held(engine, e)["A-1"].status for e in ("depot-1", "depot-2")} == {"Accepted"}
        assert (await act("block")).status_code == 303
        assert {held(engine, e)["A-1"].status for e in ("depot-1", "depot-2")} == {"Blocked"}
        assert (await act("expire")).status_code == 303
        expiries = {held(engine, e)["A-1"].expiry_date for e in ("depot-1", "depot-2")}
        assert len(expiries) == 1 and None not in expiries
        assert 'class="error" title="expired"' in (await person.get("/web/cards")).text
        assert (await act("remove", "depot-1")).status_code == 303
        assert "A-1" not in held(engine, "depot-1") and "A-1" in held(engine, "depot-2")
        assert (await act("remove")).headers["location"] == "/web/cards"
        assert "A-1" not in held(engine, "depot-2")
        assert (await person.get("/web/card?id_tag=A-1")).status_code == 404
    actions = [(e.action, e.target) for e in recent(engine, fleet) if e.action.startswith("card")]
    assert actions == [
        ("card.remove", "A-1"),
        ("card.remove", "depot-1/A-1"),
        ("card.expire", "A-1"),
        ("card.block", "A-1"),
        ("card.unblock", "depot-2/A-1"),
    ]


async def test_limiting_a_card_to_sites_and_chargers_of_ones_own_fleet(
    engine: Engine, fleet: int
) -> None:
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        page = await person.get("/web/card?id_tag=A-1")
        form = {
            "csrf_token": person.csrf,
            "action": "save",
            "id_tag": "A-1",
            "revision": revision_of(page),
            "status": "Accepted",
            "label": "pool car",
            "parent_id_tag": "",
            "expiry_date": "",
        }
        theirs = await person.client.post(
            "/web/card", data=form | {"sites": ["depot-2"], "chargers": "B-CP"}
        )
        other_site = await person.client.post(
            "/web/card", data=form | {"sites": ["depot-2", "bolt-1"]}
        )
        nowhere = await person.client.post("/web/card", data=form)
        saved = await person.client.post(
            "/web/card", data=form | {"sites": ["depot-2"], "chargers": "D2-CP"}
        )
    assert theirs.status_code == 422 and "no charger &#39;B-CP&#39; at the card" in theirs.text
    assert (
        other_site.status_code == 422
        and "no site &#39;bolt-1&#39; in your fleet" in other_site.text
    )
    assert nowhere.status_code == 422 and "Choose at least one site" in nowhere.text
    assert saved.status_code == 303
    assert "A-1" not in held(engine, "depot-1")
    assert held(engine, "depot-2")["A-1"] == CardEntry(
        id_tag="A-1", label="pool car", chargers=["D2-CP"]
    )
    assert held(engine, "bolt-1") == {"BOLT-1": CardEntry(id_tag="BOLT-1", label="theirs")}


async def test_two_operators_editing_one_card_the_later_is_refused_with_what_changed(
    engine: Engine, fleet: int
) -> None:
    async with browser(engine) as ann, browser(engine) as olga:
        await ann.sign_in("ann@acme.test")
        await olga.sign_in("olga@acme.test")
        anns_form = await ann.get("/web/card?id_tag=A-2")
        olgas_form = await olga.get("/web/card?id_tag=A-2")
        seen = revision_of(anns_form)
        assert revision_of(olgas_form) == seen
        olgas = await olga.post(
            "/web/card",
            {
                "action": "save",
                "id_tag": "A-2",
                "revision": seen,
                "status": "Accepted",
                "label": "olga's label",
                "parent_id_tag": "ACC",
                "sites": "depot-1",
            },
        )
        assert olgas.status_code == 303
        anns = await ann.post("/web/card", {"action": "block", "id_tag": "A-2", "revision": seen})
        assert anns.status_code == 409
        assert "Not saved: this card changed since your form was made" in anns.text
        assert "A-2 was changed by olga@acme.test" in anns.text
        assert "label &#39;car 2&#39; → &#34;olga&#39;s label&#34; at Depot North" in anns.text
        assert held(engine, "depot-1")["A-2"] == CardEntry(
            id_tag="A-2", label="olga's label", parent_id_tag="ACC"
        )
        # Made again on the card as it is now, the change goes through.
        again = await ann.post(
            "/web/card", {"action": "block", "id_tag": "A-2", "revision": revision_of(anns)}
        )
        assert again.status_code == 303
        assert held(engine, "depot-1")["A-2"].status == "Blocked"
        assert held(engine, "depot-1")["A-2"].label == "olga's label"

        # At the same moment, from the same revision: one wins, the other is told.
        await ann.get("/web/card?id_tag=A-5")
        seen = revision_of(await olga.get("/web/card?id_tag=A-5"))
        answers = await asyncio.gather(
            ann.post("/web/card", {"action": "block", "id_tag": "A-5", "revision": seen}),
            olga.post("/web/card", {"action": "expire", "id_tag": "A-5", "revision": seen}),
        )
        assert sorted(answer.status_code for answer in answers) == [303, 409]
        entry = held(engine, "depot-1")["A-5"]
        assert (entry.status == "Blocked") != (entry.expiry_date is not None)

        # Two operators adding the same new card: the second is told it exists.
        new_card = {"action": "add", "id_tag": "NEW-1", "sites": "depot-2", "label": "ann's"}
        assert (await ann.post("/web/card", new_card)).status_code == 303
        late = await olga.post("/web/card", new_card | {"label": "olga's"})
        assert late.status_code == 409 and "NEW-1 is in your fleet&#39;s lists already" in late.text
        assert held(engine, "depot-2")["NEW-1"].label == "ann's"


async def test_the_api_sets_a_list_only_on_the_version_it_was_made_from(
    engine: Engine, fleet: int
) -> None:
    async with browser(engine) as person:
        api = person.client
        read = await api.get("/api/edges/depot-2/cards", headers=TOKEN)
        etag = read.headers["etag"]
        assert etag == f'"{read.json()["version"]}"'
        await person.sign_in("ann@acme.test")
        page = await person.get("/web/card?id_tag=A-1")
        await person.post(
            "/web/card",
            {
                "action": "unblock",
                "id_tag": "A-1",
                "site": "depot-2",
                "revision": revision_of(page),
            },
        )
        mine = [{"id_tag": "A-1", "status": "Blocked"}, {"id_tag": "API-1"}]
        stale = await api.put(
            "/api/edges/depot-2/cards", json=mine, headers=TOKEN | {"If-Match": etag}
        )
        assert stale.status_code == 412
        body = stale.json()
        assert body["version"] == version(engine, "depot-2") and "another change" in body["detail"]
        assert [card["id_tag"] for card in body["changed"]] == ["A-1"]
        assert held(engine, "depot-2")["A-1"].status == "Accepted"  # the web's change stands
        by_query = await api.put(
            "/api/edges/depot-2/cards",
            params={"expected_version": int(etag.strip('"'))},
            json=mine,
            headers=TOKEN,
        )
        assert by_query.status_code == 412
        fresh = await api.put(
            "/api/edges/depot-2/cards",
            json=mine,
            headers=TOKEN | {"If-Match": stale.headers["etag"]},
        )
        assert fresh.status_code == 200 and fresh.headers["etag"] == f'"{fresh.json()["version"]}"'
        unchecked = await api.put("/api/edges/depot-2/cards", json=mine, headers=TOKEN)
        assert unchecked.status_code == 200  # without a version: as before
        bad = await api.put(
            "/api/edges/depot-2/cards", json=mine, headers=TOKEN | {"If-Match": '"seven"'}
        )
        assert bad.status_code == 422
    card = cards_store.fleet_card(engine, fleet, "API-1")
    assert card is not None and card.changed_by == "token"
    assert [(e.actor, e.action) for e in recent(engine, fleet)][:2] == [
        ("token", "card.list"),
        ("token", "card.list"),
    ]


async def test_the_csv_export_holds_the_filtered_list_safe_from_spreadsheets(
    engine: Engine, fleet: int
) -> None:
    desired.set_card_list(
        engine,
        "depot-2",
        [CardEntry(id_tag="A-1", status="Blocked"), CardEntry(id_tag="=cmd", label="+SUM(A1)")],
    )
    async with browser(engine) as person:
        await person.sign_in("vic@acme.test")
        everything = await person.get("/web/cards.csv")
        only_blocked = await person.get("/web/cards.csv?status=Blocked")
        theirs = await person.get("/web/cards.csv?site=bolt-1")
    assert everything.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(everything.text)))
    assert [(row["id_tag"], row["sites"], row["status"]) for row in rows] == [
        ("'=cmd", "depot-2", "Accepted"),
        ("A-1", "depot-1", "Accepted"),
        ("A-1", "depot-2", "Blocked"),
        ("A-2", "depot-1", "Accepted"),
        ("A-3", "depot-1", "Accepted"),
        ("A-4", "depot-1", "Accepted"),
        ("A-5", "depot-1", "Accepted"),
    ]
    assert rows[0]["label"] == "'+SUM(A1)" and rows[1]["parent_id_tag"] == "ACC"
    assert [row["id_tag"] for row in csv.DictReader(io.StringIO(only_blocked.text))] == [
        "A-1",
        "A-1",
    ]
    assert theirs.status_code == 404 and "BOLT" not in everything.text
    # The export, imported again, changes nothing.
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        await person.get("/web/card-import")
        preview = await upload(person, everything.text)
    assert preview.status_code == 200
    assert counts(preview)["unchanged"] == 6 and counts(preview)["errors"] == 0
    assert 'id="apply-form"' not in preview.text


async def test_an_import_is_previewed_then_applied_all_at_once(engine: Engine, fleet: int) -> None:
    versions = {edge_id: version(engine, edge_id) for edge_id in ("depot-1", "depot-2")}
    text = (
        "id_tag,status,expiry_date,parent_id_tag,label,sites,chargers\n"
        "NEW-1,,2027-06-30,ACC,new van,depot-1;depot-2,\n"  # added at both
        "A-2,Blocked,,ACC,car 2,,\n"  # blocked where it is
        "A-3,,,ACC,car 3 renamed,depot-1,D1-CP\n"  # changed
        "A-1,,,,,depot-2,\n"  # taken from depot-1
        "A-4,,,ACC,car 4,,\n"  # as it is
    )
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        await person.get("/web/card-import")
        preview = await upload(person, text, name="fleet.csv")
        assert preview.status_code == 200, preview.text
        assert counts(preview) == {
            "added": 1,
            "changed": 2,
            "blocked": 1,
            "removed": 0,
            "unchanged": 1,
            "errors": 0,
            "sites": 2,
        }
        assert re.findall(r'data-outcome="(\w+)"', preview.text) == ["added", "changed", "blocked"]
        assert "added (Accepted) at Depot North, Depot South" in preview.text
        assert "removed at Depot North" in preview.text
        assert {e: version(engine, e) for e in versions} == versions  # nothing yet
        applied = await person.post("/web/card-import/apply", {"import_id": import_id(preview)})
        assert applied.status_code == 200 and "1 added, 2 changed, 1 blocked" in applied.text
        again = await person.post("/web/card-import/apply", {"import_id": import_id(preview)})
        assert again.status_code == 410  # applied once
        listing = await person.get("/web/cards?q=NEW")
    assert listed(listing) == [("NEW-1", "Accepted", "depot-1;depot-2")]
    assert {e: version(engine, e) for e in versions} == {e: v + 1 for e, v in versions.items()}
    assert held(engine, "depot-1")["NEW-1"].expiry_date == "2027-06-30T00:00:00Z"
    assert held(engine, "depot-1")["A-2"].status == "Blocked"
    assert held(engine, "depot-1")["A-3"].chargers == ["D1-CP"]
    assert "A-1" not in held(engine, "depot-1") and "A-1" in held(engine, "depot-2")
    entry = next(e for e in recent(engine, fleet) if e.action == "card.import")
    assert entry.actor == "ann@acme.test" and entry.target == "fleet.csv"
    assert entry.detail is not None and entry.detail["cards"]["added"] == 1


async def test_a_hostile_import_names_every_bad_line_and_changes_nothing(
    engine: Engine, fleet: int
) -> None:
    before = {edge_id: held(engine, edge_id) for edge_id in ("depot-1", "depot-2", "bolt-1")}
    text = (
        "id_tag,status,sites,chargers,label\n"
        "GOOD-1,,,,fine\n"  # 2
        "GOOD-1,,,,again\n"  # 3: a duplicate
        "EVIL-1,,bolt-1,,\n"  # 4: another fleet's site
        "EVIL-2,,depot-1,B-CP,\n"  # 5: another fleet's charger
        "EVIL-3,,no-such-site,,\n"  # 6
        f"HUGE,,,,{'x' * 70_000}\n"  # 7
        "BAD,Maybe,,,\n"  # 8
        "BOLT-1,Blocked,,,\n"  # 9: their card, in no list of ours: new here
        "=cmd,,depot-1,,=HYPERLINK(1)\n"  # 10: fine, a formula is only text here
    )
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        await person.get("/web/card-import")
        latin1 = await upload(person, "id_tag,label\nK,Müller\n".encode("latin-1"))
        preview = await upload(person, text)
    assert latin1.status_code == 422 and "line 2 is not UTF-8 (byte 0xfc)" in latin1.text
    assert preview.status_code == 422
    lines = bad_lines(preview)
    assert sorted(lines) == [3, 4, 5, 6, 7, 8]
    assert lines[3].startswith("card GOOD-1 is on line 2 already")
    assert lines[4] == "no site &#39;bolt-1&#39; in your fleet"
    assert lines[5] == "no charger &#39;B-CP&#39; at the card&#39;s sites"
    assert lines[6] == "no site &#39;no-such-site&#39; in your fleet"
    assert lines[7] == "longer than 65536 characters"
    assert "Maybe" in lines[8]
    assert 'id="apply-form"' not in preview.text
    assert {edge_id: held(engine, edge_id) for edge_id in before} == before


async def test_an_import_past_its_bounds_is_refused_whole(engine: Engine, fleet: int) -> None:
    settings = web_settings()
    settings.cards.max_import_rows = 3
    settings.cards.max_import_bytes = 2048
    async with browser(engine, settings) as person:
        await person.sign_in("ann@acme.test")
        await person.get("/web/card-import")
        rows = await upload(person, "id_tag\nC1\nC2\nC3\nC4\n")
        large = await upload(person, "id_tag,label\n" + "C1," + "x" * 3000 + "\n")
        huge = await upload(person, b"id_tag\n" + b"C" * 200_000)
    assert rows.status_code == 422 and "more than 3 cards (line 5)" in rows.text
    assert large.status_code == 422 and "more than 2048" in large.text
    assert huge.status_code == 413  # refused while it streams in
    assert "C1" not in held(engine, "depot-1")


async def test_an_import_whose_cards_changed_since_its_preview_is_previewed_again(
    engine: Engine, fleet: int
) -> None:
    text = "id_tag,label\nA-2,ann's import\nA-4,ann's import\n"
    async with browser(engine) as ann, browser(engine) as olga:
        await ann.sign_in("ann@acme.test")
        await olga.sign_in("olga@acme.test")
        await ann.get("/web/card-import")
        preview = await upload(ann, text)
        assert counts(preview)["changed"] == 2
        page = await olga.get("/web/card?id_tag=A-4")
        await olga.post(
            "/web/card", {"action": "block", "id_tag": "A-4", "revision": revision_of(page)}
        )
        refused = await ann.post("/web/card-import/apply", {"import_id": import_id(preview)})
        assert refused.status_code == 409
        assert "Not applied: cards changed since your preview" in refused.text
        assert "A-4 was changed by olga@acme.test" in refused.text
        assert held(engine, "depot-1")["A-2"].label == "car 2"  # nothing of it was applied
        applied = await ann.post("/web/card-import/apply", {"import_id": import_id(refused)})
        assert applied.status_code == 200
    assert held(engine, "depot-1")["A-2"].label == "ann's import"
    assert held(engine, "depot-1")["A-4"] == CardEntry(
        id_tag="A-4", status="Blocked", label="ann's import", parent_id_tag="ACC"
    )


async def test_a_site_import_changes_that_sites_list_only(engine: Engine, fleet: int) -> None:
    before = held(engine, "depot-1")
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        await person.get("/web/card-import?site=depot-2")
        wrong = await upload(person, "id_tag,sites\nS-1,depot-1\n", site="depot-2")
        theirs = await upload(person, "id_tag\nS-1\n", site="bolt-1")
        preview = await upload(person, "id_tag,status\nS-1,\nA-1,Accepted\n", site="depot-2")
        assert await person.post("/web/card-import/apply", {"import_id": import_id(preview)})
    assert bad_lines(wrong) == {2: "this import is for site depot-2 only; the line names depot-1"}
    assert theirs.status_code == 404
    assert held(engine, "depot-1") == before
    assert set(held(engine, "depot-2")) == {"A-1", "S-1"}
    assert held(engine, "depot-2")["A-1"].status == "Accepted"


async def test_viewers_other_fleets_and_forged_forms_change_no_card(
    engine: Engine, fleet: int
) -> None:
    before = {edge_id: version(engine, edge_id) for edge_id in ("depot-1", "depot-2", "bolt-1")}
    async with browser(engine) as ann:
        await ann.sign_in("ann@acme.test")
        await ann.get("/web/card-import")
        anns_preview = import_id(await upload(ann, "id_tag\nANN-1\n"))
    async with browser(engine) as viewer:
        await viewer.sign_in("vic@acme.test")
        page = await viewer.get("/web/card?id_tag=A-1")
        refusals: list[Any] = [
            await viewer.post(
                "/web/card",
                {"action": "block", "id_tag": "A-1", "revision": revision_of_text(page)},
            ),
            await viewer.get("/web/card-import"),
            await upload(viewer, "id_tag\nVIC\n"),
            await viewer.post("/web/card-import/apply", {"import_id": anns_preview}),
        ]
        assert [answer.status_code for answer in refusals] == [403, 403, 403, 403]
    async with browser(engine) as bob:
        await bob.sign_in("bob@bolt.test")
        await bob.get("/web/cards")
        assert (await bob.get("/web/card?id_tag=A-1")).status_code == 404
        assert (
            await bob.post("/web/card-import/apply", {"import_id": anns_preview})
        ).status_code == 410
        assert (
            await bob.post("/web/card", {"action": "add", "id_tag": "BOB", "site": "depot-1"})
        ).status_code == 404
        into_theirs = await bob.post(
            "/web/card", {"action": "add", "id_tag": "BOB", "sites": "depot-1"}
        )
        assert into_theirs.status_code == 422 and "no site &#39;depot-1&#39;" in into_theirs.text
        no_token = await bob.client.post(
            "/web/card", data={"action": "add", "id_tag": "BOB", "sites": "bolt-1"}
        )
        assert no_token.status_code == 403
    assert {edge_id: version(engine, edge_id) for edge_id in before} == before


def revision_of_text(page: httpx.Response) -> str:
    """A viewer's page has no forms: the revision as the page states it."""
    found = re.search(r'data-revision="(\d+)"', page.text)
    assert found is not None
    return found.group(1)
