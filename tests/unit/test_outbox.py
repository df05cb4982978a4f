"""The outbox: events kept in order on disk, sent as batches the aggregator's schema
accepts, forgotten only up to the acknowledged sequence number."""

from __future__ import annotations

from pathlib import Path

from contract import protocol as wire
from edge.store.database import open_database
from edge.store.outbox import store_epoch
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
    epoch = store_epoch(db)
    assert parsed.epoch == epoch
    assert acknowledge(db, wire.Ack(seq=10), epoch, "2026-01-01T00:00:01.000Z").deleted == 10
    held = backlog(db)
    assert (held.events, held.acked_seq) == (15, 10)
    after = pending_batch(db, "site-1", limit=100, max_bytes=1_000_000)
    assert after is not None and after.first_seq == 11


def test_a_site_without_cloud_keeps_no_outbox(tmp_path: Path) -> None:
    db = open_database(tmp_path / "edge.db")
    Outbox(enabled=False).append(db, wire.ChargerConnection(charger_id="CP1", connected=True))
    assert pending_batch(db, "site-1", 10, 1000) is None


def test_acks_beyond_what_was_sent_or_for_another_store_are_refused(tmp_path: Path) -> None:
    db = open_database(tmp_path / "edge.db")
    outbox = Outbox(enabled=True)
    for _ in range(5):
        outbox.append(db, wire.ChargerConnection(charger_id="CP1", connected=True))
    epoch, now = store_epoch(db), "2026-01-01T00:00:01.000Z"
    assert len(epoch) == 32 and store_epoch(open_database(tmp_path / "other.db")) != epoch
    batch = pending_batch(db, "site-1", limit=3, max_bytes=1_000_000)
    assert batch is not None and batch.last_seq == 3  # sent: 1-3
    beyond = acknowledge(db, wire.Ack(seq=5), epoch, now)
    assert beyond.deleted == 0 and beyond.refused is not None and "beyond" in beyond.refused
    other = acknowledge(db, wire.Ack(seq=2, epoch="0" * 32), epoch, now)
    assert other.deleted == 0 and other.refused is not None and "store" in other.refused
    assert backlog(db).refused_acks == 2 and backlog(db).events == 5
    quarantined = wire.Ack(
        seq=3,
        epoch=epoch,
        quarantined=[wire.Quarantined(seq=2, reason="invalid")],
        quarantined_total=7,
    )
    assert acknowledge(db, quarantined, epoch, now).deleted == 3
    held = backlog(db)
    assert (held.events, held.acked_seq, held.cloud_quarantined) == (2, 3, 7)
    assert held.last_quarantined == f"seq 2 (charger.connection): invalid at {now}"


def test_a_row_an_older_release_wrote_is_cleaned_before_it_is_sent(tmp_path: Path) -> None:
    db = open_database(tmp_path / "edge.db")
    data = wire.ChargerBoot(charger_id="CP1", vendor="x" * 100_000)
    db.conn.execute(
        "INSERT INTO outbox (at, kind, data) VALUES (?, ?, ?)",
        ("2026-01-01T00:00:00.000Z", "charger.boot", data.model_dump_json()),
    )
    batch = pending_batch(db, "site-1", limit=10, max_bytes=1_000_000)
    assert batch is not None and len(batch.payload) < 2000
    (event,) = wire.EventBatch.model_validate_json(batch.payload).events
    assert isinstance(event.data, wire.ChargerBoot) and event.data.cleaned
