"""The outbox: events kept in order on disk, sent as batches the aggregator's schema
accepts, forgotten only up to the acknowledged sequence number."""

from __future__ import annotations

from pathlib import Path

from edge.store.database import open_database
from edge.sync import protocol as wire
from edge.sync.outbox import Outbox, acknowledge, backlog, pending_batch


def test_batches_are_valid_in_order_and_bounded(tmp_path: Path) -> None:
    db = open_database(tmp_path / "edge.db")
    outbox = Outbox(enabled=True)
    for number in range(25):
        outbox.append(
            db,
            wire.ConnectorStatus(
                charger_id="CP1",
                connector_id=1,
                status="Available",
                error_code="NoError",
                info=f'marker "{number}" é',
            ),
            "2026-01-01T00:00:00.000Z",
        )
    batch = pending_batch(db, "site-1", limit=10, max_bytes=1_000_000)
    assert batch is not None and (batch.first_seq, batch.last_seq, batch.count) == (1, 10, 10)
    parsed = wire.EventBatch.model_validate_json(batch.payload)
    assert [event.seq for event in parsed.events] == list(range(1, 11))
    first = parsed.events[0].data
    assert isinstance(first, wire.ConnectorStatus) and first.info == 'marker "0" é'
    small = pending_batch(db, "site-1", limit=10, max_bytes=450)
    assert small is not None and small.count == 2  # bounded by size, at least one
    assert acknowledge(db, 10, "2026-01-01T00:00:01.000Z") == 10
    held = backlog(db)
    assert (held.events, held.acked_seq) == (15, 10)
    after = pending_batch(db, "site-1", limit=100, max_bytes=1_000_000)
    assert after is not None and after.first_seq == 11


def test_a_site_without_cloud_keeps_no_outbox(tmp_path: Path) -> None:
    db = open_database(tmp_path / "edge.db")
    Outbox(enabled=False).append(db, wire.ChargerConnection(charger_id="CP1", connected=True))
    assert pending_batch(db, "site-1", 10, 1000) is None
