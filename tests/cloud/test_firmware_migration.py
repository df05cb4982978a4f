"""A store of the release before signed manifests, migrated: its images stay, without a
manifest (and are not offered until added again), its edges' firmware progress stays,
and the new stage `fetched` is taken (and the check on stages kept)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from cloud.store.database import alembic_config, open_store, schema_revision
from cloud.store.desired import offers_to_send


def test_images_and_progress_from_before_manifests_survive_the_migration(
    empty_database_url: str,
) -> None:
    engine = create_engine(empty_database_url)
    config = alembic_config()
    now = datetime.now(UTC)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.execute(
            text("INSERT INTO edges (id, state, created_at) VALUES ('site-7', 'online', :now)"),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO firmware_images (name, version, size, sha256, signature, path, "
                "created_at) VALUES ('cp.bin', '1.0', 10, :sha, 'c2ln', '/fw/cp.bin', :now)"
            ),
            {"sha": "ab" * 32, "now": now},
        )
        connection.execute(
            text(
                "INSERT INTO firmware_status (edge_id, image, status, bytes, detail, "
                "offered_at, updated_at) VALUES ('site-7', 'cp.bin', 'downloading', 4, '', "
                ":now, :now)"
            ),
            {"now": now},
        )
    engine.dispose()

    migrated = open_store(empty_database_url)
    try:
        assert (
            schema_revision(migrated)
            == ScriptDirectory.from_config(alembic_config()).get_current_head()
        )
        with migrated.begin() as connection:
            image = connection.execute(text("SELECT manifest FROM firmware_images")).one()
            assert image.manifest is None
            status = connection.execute(
                text("SELECT status, bytes, forced FROM firmware_status")
            ).one()
            assert (status.status, status.bytes, bool(status.forced)) == ("downloading", 4, False)
            connection.execute(text("UPDATE firmware_status SET status = 'fetched'"))
        with pytest.raises(IntegrityError), migrated.begin() as connection:
            connection.execute(text("UPDATE firmware_status SET status = 'bogus'"))
        # Still `downloading` in the cloud, but never offered again without a manifest.
        assert offers_to_send(migrated, "site-7") == []
    finally:
        migrated.dispose()
