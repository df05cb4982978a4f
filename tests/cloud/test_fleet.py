"""What the REST API reads: edges with presence and sync lag, transactions, rejections."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from cloud.store.desired import set_card_list
from cloud.store.fleet import list_edges, list_transactions, rejection_counts
from cloud.store.ingest import record_status, store_batch
from cloud.store.times import parse_time
from contract.protocol import CardEntry
from tests.cloud.payloads import batch, card_used, event, status, transaction_started

T0 = parse_time("2026-03-01T10:00:00Z")


def send(engine: Engine, edge_id: str, seq: int, data: dict[str, object], at: str) -> None:
    result = store_batch(engine, edge_id, batch(edge_id, [event(seq, data, at)]), 1_048_576)
    assert result.rejected is None, result.detail


def test_edges_show_presence_lag_backlog_and_rejections(engine: Engine) -> None:
    send(engine, "site-1", 1, card_used(), at="2026-03-01T10:00:00Z")
    assert record_status(
        engine,
        "site-1",
        status(software_version="0.4.0", backlog=7, oldest_age_s=30.0),
        now=T0 + timedelta(seconds=10),
    )
    store_batch(engine, "site-1", b"garbage", 1_048_576)
    store_batch(engine, "site-1", b"garbage", 1_048_576)
    set_card_list(engine, "site-2", [CardEntry(id_tag="ALICE")])  # desired before first contact

    first, second = list_edges(engine, now=T0 + timedelta(seconds=70))
    assert (first.edge_id, first.state, first.online, first.last_seq) == (
        "site-1",
        "online",
        True,
        1,
    )
    assert first.sync_lag_s == 60.0  # since the status, newer than the event
    assert (first.backlog, first.oldest_age_s, first.software_version) == (7, 30.0, "0.4.0")
    assert first.rejections == 2 and first.duplicate_events == 0
    assert (second.edge_id, second.state, second.sync_lag_s, second.last_seq) == (
        "site-2",
        "unknown",
        None,
        0,
    )
    assert second.first_seen_at is None and not second.online

    send(engine, "site-1", 2, card_used(), at="2026-03-01T10:01:00Z")
    (first, _) = list_edges(engine, now=T0 + timedelta(seconds=70))
    assert first.sync_lag_s == 10.0  # since the newest event


def test_transactions_newest_first_by_edge_and_limited(engine: Engine) -> None:
    for seq, hour in enumerate((8, 10, 9), start=1):
        started = transaction_started(seq, started_at=f"2026-03-01T{hour:02d}:00:00Z")
        send(engine, "site-1", seq, started, at=f"2026-03-01T{hour:02d}:00:00Z")
    send(
        engine,
        "site-2",
        1,
        transaction_started(1, started_at="2026-03-01T12:00:00Z"),
        at="2026-03-01T12:00:00Z",
    )
    assert [(t.edge_id, t.transaction_id) for t in list_transactions(engine)] == [
        ("site-2", 1),
        ("site-1", 2),
        ("site-1", 3),
        ("site-1", 1),
    ]
    assert [t.transaction_id for t in list_transactions(engine, edge_id="site-1", limit=2)] == [
        2,
        3,
    ]


def test_rejection_counts_newest_first(engine: Engine) -> None:
    store_batch(engine, "site-1", b"{", 1_048_576, now=T0)
    store_batch(engine, "site-2", b"x" * 2000, 1024, now=T0 + timedelta(seconds=5))
    store_batch(engine, "site-1", b"{", 1_048_576, now=T0 + timedelta(seconds=9))
    counts = rejection_counts(engine)
    assert [(c.source, c.reason, c.count) for c in counts] == [
        ("site-1", "not_json", 2),
        ("site-2", "too_large", 1),
    ]
    assert counts[0].first_at == T0 and counts[0].last_at == T0 + timedelta(seconds=9)
