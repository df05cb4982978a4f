"""A store from before fleets, migrated: its edges go into the default fleet with their
chargers and connectors counted for the overview; new edges go there too; the counts
follow every batch that changes them."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Engine, create_engine, select, text

from cloud.store.database import alembic_config, open_store
from cloud.store.ingest import store_batch
from cloud.store.schema import DEFAULT_FLEET_ID, edges, fleets
from tests.cloud.web import charger_events, sync_edge


def test_edges_from_before_fleets_are_in_the_default_fleet_with_their_counts(
    empty_database_url: str,
) -> None:
    engine = create_engine(empty_database_url)
    config = alembic_config()
    now = datetime.now(UTC)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        connection.execute(
            text("INSERT INTO edges (id, state, created_at) VALUES ('site-7', 'online', :now)"),
            {"now": now},
        )
        for charger, connected in (("CP1", True), ("CP2", False)):
            connection.execute(
                text(
                    "INSERT INTO chargers (edge_id, charger_id, connected, updated_at) "
                    "VALUES ('site-7', :charger, :connected, :now)"
                ),
                {"charger": charger, "connected": connected, "now": now},
            )
        for charger, connector, status, error in (
            ("CP1", 1, "Charging", "NoError"),
            ("CP1", 2, "Available", "NoError"),
            ("CP2", 1, "Faulted", "GroundFailure"),
            ("CP2", 2, "Available", "OverCurrentFailure"),
        ):
            connection.execute(
                text(
                    "INSERT INTO connectors (edge_id, charger_id, connector_id, status, "
                    "error_code, status_at) VALUES ('site-7', :charger, :connector, :status, "
                    ":error, :now)"
                ),
                {"charger": charger, "connector": connector, "status": status, "error": error}
                | {"now": now},
            )
    engine.dispose()

    migrated = open_store(empty_database_url)
    try:
        with migrated.connect() as connection:
            assert connection.execute(select(fleets.c.id, fleets.c.name)).all() == [
                (DEFAULT_FLEET_ID, "default")
            ]
            row = connection.execute(select(edges).where(edges.c.id == "site-7")).one()
        assert row.fleet_id == DEFAULT_FLEET_ID
        assert (row.chargers_total, row.chargers_disconnected, row.connectors_faulted) == (2, 1, 2)
        assert row.connector_counts == {"Available": 2, "Charging": 1, "Faulted": 1}
    finally:
        migrated.dispose()


def counts(engine: Engine, edge_id: str) -> tuple[int, int, int, dict[str, int], int]:
    with engine.connect() as connection:
        row = connection.execute(select(edges).where(edges.c.id == edge_id)).one()
    return (
        row.chargers_total,
        row.chargers_disconnected,
        row.connectors_faulted,
        row.connector_counts,
        row.revision,
    )


def test_every_batch_that_changes_chargers_counts_them_again(engine: Engine) -> None:
    sync_edge(engine, "site-1", charger_events("CP1", [(1, "Available", "NoError")]))
    first = counts(engine, "site-1")
    assert first[:4] == (1, 0, 0, {"Available": 1})
    sync_edge(
        engine,
        "site-1",
        [
            {"kind": "charger.connection", "charger_id": "CP1", "connected": False},
            {"kind": "charger.status", "charger_id": "CP1", "connector_id": 1}
            | {"status": "Faulted", "error_code": "GroundFailure"},
            {"kind": "charger.boot", "charger_id": "CP2"},
        ],
        first_seq=4,
    )
    second = counts(engine, "site-1")
    assert second[:4] == (2, 1, 1, {"Faulted": 1})
    assert second[4] > first[4]  # the change marker moved with it


def test_a_refused_payload_moves_its_edges_change_marker(engine: Engine) -> None:
    sync_edge(engine, "site-1", charger_events("CP1", [(1, "Available", "NoError")]))
    before = counts(engine, "site-1")[4]
    result = store_batch(engine, "site-1", b"{not json")
    assert result.rejected == "not_json"
    assert counts(engine, "site-1")[4] == before + 1
