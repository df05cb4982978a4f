"""The fleet's cards in the store, on SQLite and PostgreSQL: every write of a card list
(the API's, the view's) keeps `edge_cards` equal to the latest list and gives changed
cards the fleet's next revision; a change made on a stale revision writes nothing; lists
made before the fleet card list are brought in by the migration; an edge that moves
fleets takes its cards along; versions no delta starts from are forgotten."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, func, select, text

from cloud.store import card_edits, desired, fleets
from cloud.store import cards as cards_store
from cloud.store.card_edits import CardChange, CardEditRefused, CardsChanged
from cloud.store.cards import CardFilter
from cloud.store.database import alembic_config, open_store
from cloud.store.schema import card_lists, edge_cards, edges
from contract.protocol import CardEntry
from tests.cloud.web import charger_events, sync_edge


@pytest.fixture
def acme(engine: Engine) -> int:
    """Fleet Acme with depot-1 (charger D1-CP) and depot-2 (D2-CP); fleet Bolt with bolt-1
    (B-CP)."""
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    for edge_id, fleet_id, charger in (
        ("depot-1", acme, "D1-CP"),
        ("depot-2", acme, "D2-CP"),
        ("bolt-1", bolt, "B-CP"),
    ):
        fleets.assign_edge(engine, edge_id, fleet_id, site_name=edge_id.upper())
        sync_edge(engine, edge_id, charger_events(charger, [(1, "Available", "NoError")]))
    return acme


def projection(engine: Engine, edge_id: str) -> dict[str, CardEntry]:
    with engine.connect() as connection:
        rows = connection.execute(select(edge_cards).where(edge_cards.c.edge_id == edge_id))
        return {
            row.id_tag: CardEntry(
                id_tag=row.id_tag,
                status=row.status,
                expiry_date=row.expiry_date,
                parent_id_tag=row.parent_id_tag,
                label=row.label,
                chargers=row.chargers or [],
            )
            for row in rows
        }


def latest(engine: Engine, edge_id: str) -> dict[str, CardEntry]:
    found = desired.current_card_list(engine, edge_id)
    assert found is not None
    return {card.id_tag: card for card in found[1]}


def test_every_list_write_keeps_the_projection_equal_to_the_latest_list(
    engine: Engine, acme: int
) -> None:
    desired.set_card_list(
        engine, "depot-1", [CardEntry(id_tag="A"), CardEntry(id_tag="B", label="van")]
    )
    desired.set_card_list(
        engine, "depot-1", [CardEntry(id_tag="B", status="Blocked"), CardEntry(id_tag="C")]
    )
    card_edits.change_cards(
        engine,
        acme,
        [CardChange("c", {"label": "pool", "chargers": ["D1-CP"]}, at=frozenset({"depot-1"}))],
        "ann",
    )
    assert projection(engine, "depot-1") == latest(engine, "depot-1")
    assert set(latest(engine, "depot-1")) == {"B", "C"}
    assert latest(engine, "depot-1")["C"].chargers == ["D1-CP"]


def test_a_fleet_wide_change_is_one_new_version_per_site_changed_and_sent_as_a_delta(
    engine: Engine, acme: int
) -> None:
    desired.set_card_list(engine, "depot-1", [CardEntry(id_tag="K"), CardEntry(id_tag="L")])
    desired.set_card_list(engine, "depot-2", [CardEntry(id_tag="K")])
    with engine.begin() as connection:  # depot-1 applied its list
        connection.execute(
            edges.update().where(edges.c.id == "depot-1").values(cards_version_reported=1)
        )
    seen = cards_store.fleet_card(engine, acme, "K")
    assert seen is not None and seen.revision == 2  # the fleet's revision of depot-2's write
    result = card_edits.change_cards(
        engine,
        acme,
        [CardChange("K", {"status": "Blocked"}, expected_revision=seen.revision)],
        "ann",
    )
    assert result.versions == {"depot-1": 2, "depot-2": 2}
    delta = desired.card_list_to_send(engine, "depot-1")
    assert delta is not None and not delta.full and delta.base_version == 1
    assert [(card.id_tag, card.status) for card in delta.cards] == [("K", "Blocked")]
    card = cards_store.fleet_card(engine, acme, "k")
    assert card is not None and card.revision == result.revision
    assert card.changed_by == "ann"
    assert card.change == "status Accepted → Blocked at DEPOT-1, DEPOT-2"


def test_only_the_latest_and_the_reported_versions_are_kept(engine: Engine, acme: int) -> None:
    for number in range(1, 5):
        desired.set_card_list(engine, "depot-1", [CardEntry(id_tag=f"K{number}")])
        if number == 2:
            with engine.begin() as connection:
                connection.execute(
                    edges.update().where(edges.c.id == "depot-1").values(cards_version_reported=2)
                )
    with engine.connect() as connection:
        kept = connection.execute(
            select(card_lists.c.version)
            .where(card_lists.c.edge_id == "depot-1")
            .order_by(card_lists.c.version)
        ).scalars()
        assert list(kept) == [2, 4]
    delta = desired.card_list_to_send(engine, "depot-1")
    assert delta is not None and delta.base_version == 2 and delta.removed == ["K2"]


def test_a_change_made_on_a_stale_revision_writes_nothing(engine: Engine, acme: int) -> None:
    desired.set_card_list(engine, "depot-1", [CardEntry(id_tag="K", label="old")])
    seen = cards_store.fleet_card(engine, acme, "K")
    assert seen is not None
    card_edits.change_cards(
        engine, acme, [CardChange("K", {"label": "bob's"}, expected_revision=seen.revision)], "bob"
    )
    with pytest.raises(CardsChanged) as refused:
        card_edits.change_cards(
            engine,
            acme,
            [CardChange("K", {"status": "Blocked"}, expected_revision=seen.revision)],
            "ann",
        )
    (stale,) = refused.value.stale
    assert stale.changed_by == "bob" and "label 'old' → \"bob's\"" in (stale.change or "")
    assert latest(engine, "depot-1")["K"] == CardEntry(id_tag="K", label="bob's")
    with engine.connect() as connection:
        versions = connection.execute(
            select(func.count()).select_from(card_lists).where(card_lists.c.edge_id == "depot-1")
        ).scalar()
        assert versions == 1  # ann's change left no version behind


def test_sites_and_chargers_of_another_fleet_are_refused_with_the_line(
    engine: Engine, acme: int
) -> None:
    desired.set_card_list(engine, "bolt-1", [CardEntry(id_tag="THEIRS")])
    with pytest.raises(CardEditRefused) as refused:
        card_edits.change_cards(
            engine,
            acme,
            [
                CardChange("A", at=frozenset({"bolt-1"}), line=2),
                CardChange("B", {"chargers": ["B-CP"]}, at=frozenset({"depot-1"}), line=3),
                CardChange("C", {"chargers": ["D2-CP"]}, at=frozenset({"depot-1"}), line=4),
                CardChange("THEIRS", {"status": "Blocked"}, line=5),
                CardChange("D", {"chargers": ["D1-CP"]}, at=frozenset({"depot-1"}), line=6),
            ],
            "ann",
        )
    assert [(error.line, error.reason) for error in refused.value.errors] == [
        (2, "no site 'bolt-1' in your fleet"),
        (3, "no charger 'B-CP' at the card's sites"),
        (4, "no charger 'D2-CP' at the card's sites"),
        (5, "card THEIRS is at no site of your fleet"),
    ]
    assert desired.current_card_list(engine, "depot-1") is None  # D was not written either
    assert latest(engine, "bolt-1")["THEIRS"].status == "Accepted"


def test_the_fleet_list_pages_by_key_within_its_fleet(engine: Engine, acme: int) -> None:
    desired.set_card_list(
        engine, "depot-1", [CardEntry(id_tag=f"C{n:02d}", label=f"car {n}") for n in range(7)]
    )
    desired.set_card_list(
        engine, "depot-2", [CardEntry(id_tag="c03", status="Blocked"), CardEntry(id_tag="Z%_")]
    )
    desired.set_card_list(engine, "bolt-1", [CardEntry(id_tag="C00"), CardEntry(id_tag="B1")])
    seen: list[str] = []
    after = None
    while True:
        page = cards_store.card_page(engine, CardFilter(acme), after, 3)
        seen += [card.id_tag for card in page.cards]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ["C00", "C01", "C02", "C03", "C04", "C05", "C06", "Z%_"]
    both = cards_store.fleet_card(engine, acme, "C03")
    assert both is not None and [site.edge_id for site in both.sites] == ["depot-1", "depot-2"]
    assert both.values("status") == ["Accepted", "Blocked"]

    def keys(**filters: str) -> list[str]:
        found = cards_store.card_page(engine, CardFilter(acme, **filters), None, 50)
        return [card.key for card in found.cards]

    assert keys(status="Blocked") == ["C03"]
    assert keys(site="depot-2") == ["C03", "Z%_"]
    assert keys(text="CAR 5") == ["C05"]
    assert keys(text="%_") == ["Z%_"]  # LIKE's wildcards are searched for, not used
    assert keys(site="bolt-1") == []


def test_an_edge_moving_fleets_takes_its_cards_along(engine: Engine, acme: int) -> None:
    desired.set_card_list(engine, "depot-2", [CardEntry(id_tag="MOVER")])
    bolt = fleets.find_fleet(engine, "Bolt").fleet_id
    fleets.assign_edge(engine, "depot-2", bolt)
    assert cards_store.fleet_card(engine, acme, "MOVER") is None
    moved = cards_store.fleet_card(engine, bolt, "MOVER")
    assert moved is not None and [site.edge_id for site in moved.sites] == ["depot-2"]
    listed = cards_store.card_page(engine, CardFilter(bolt, text="mover"), None, 10)
    assert [card.id_tag for card in listed.cards] == ["MOVER"]
    assert cards_store.card_page(engine, CardFilter(acme, text="mover"), None, 10).cards == []


def test_lists_held_before_the_fleet_card_list_are_brought_in(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    config = alembic_config()
    now = datetime.now(UTC)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0010")
        connection.execute(
            text(
                "INSERT INTO edges (id, state, created_at, fleet_id) VALUES ('s-1', 'online', :now, 1)"
            ),
            {"now": now},
        )
        for version, document in (
            (1, [{"id_tag": "OLD", "status": "Accepted"}]),
            (
                2,
                [
                    {"id_tag": "K1", "status": "Blocked", "label": "van", "chargers": ["CP1"]},
                    {"id_tag": "K2", "status": "Accepted", "parent_id_tag": "ACC"},
                ],
            ),
        ):
            connection.execute(
                text(
                    "INSERT INTO card_lists (edge_id, version, document, created_at) "
                    "VALUES ('s-1', :version, :document, :now)"
                ),
                {"version": version, "document": json.dumps(document), "now": now},
            )
    engine.dispose()
    migrated = open_store(empty_database_url)
    try:
        card = cards_store.fleet_card(migrated, 1, "k1")
        assert card is not None and card.revision == 0
        assert card.sites[0].entry == CardEntry(
            id_tag="K1", status="Blocked", label="van", chargers=["CP1"]
        )
        assert card.sites[0].version == 2
        assert cards_store.fleet_card(migrated, 1, "OLD") is None
        page = cards_store.card_page(migrated, CardFilter(1), None, 10)
        assert [found.id_tag for found in page.cards] == ["K1", "K2"]
    finally:
        migrated.dispose()
