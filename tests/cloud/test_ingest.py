"""Storing edges' event batches: exactly once, in order, and every bad payload refused,
counted and leaving nothing behind."""

from __future__ import annotations

import json

from sqlalchemy import Engine

from cloud.store.fleet import list_edges, rejection_counts
from cloud.store.ingest import IngestResult, record_status, store_batch
from cloud.store.schema import card_uses, edges, events, transactions
from cloud.store.times import parse_time
from tests.cloud.payloads import (
    batch,
    card_use_batch,
    card_used,
    event,
    status,
    transaction_started,
)
from tests.cloud.rows import count, rows

EDGE = "site-7"
MAX = 1_048_576


def stored_seqs(engine: Engine) -> list[int]:
    return [row.seq for row in rows(engine, events, events.c.seq)]


def rejected(engine: Engine, source: str, reason: str) -> int:
    found = [r for r in rejection_counts(engine) if (r.source, r.reason) == (source, reason)]
    return found[0].count if found else 0


def test_a_batch_is_stored_applied_and_acknowledged(engine: Engine) -> None:
    result = store_batch(engine, EDGE, card_use_batch(EDGE, range(1, 4)), MAX)
    assert result == IngestResult(ack_seq=3, stored=3, duplicates=0, rejected=None)
    assert stored_seqs(engine) == [1, 2, 3]
    first = rows(engine, events, events.c.seq)[0]
    assert first.kind == "card.used" and first.data["id_tag"] == "CARD-1-1"
    assert first.at == parse_time("2026-03-01T10:00:00Z")
    assert [use.id_tag for use in rows(engine, card_uses, card_uses.c.seq)] == [
        "CARD-1-1",
        "CARD-1-2",
        "CARD-1-3",
    ]
    (edge,) = rows(engine, edges)
    assert edge.id == EDGE and edge.last_seq == 3 and edge.first_seen_at is not None


def test_a_repeated_batch_is_acknowledged_again_and_stored_once(engine: Engine) -> None:
    payload = card_use_batch(EDGE, range(1, 4))
    store_batch(engine, EDGE, payload, MAX)
    again = store_batch(engine, EDGE, payload, MAX)
    assert again == IngestResult(ack_seq=3, stored=0, duplicates=3, rejected=None)
    assert stored_seqs(engine) == [1, 2, 3]
    assert count(engine, card_uses) == 3  # not applied twice
    assert list_edges(engine, parse_time("2026-03-01T10:00:00Z"))[0].duplicate_events == 3
    assert rejection_counts(engine) == []  # a repeat is not a fault


def test_a_batch_overlapping_stored_events_stores_only_the_new_ones(engine: Engine) -> None:
    store_batch(engine, EDGE, card_use_batch(EDGE, range(1, 4)), MAX)
    result = store_batch(engine, EDGE, card_use_batch(EDGE, range(2, 6)), MAX)
    assert result == IngestResult(ack_seq=5, stored=2, duplicates=2, rejected=None)
    assert stored_seqs(engine) == [1, 2, 3, 4, 5]


def test_a_replayed_old_seq_changes_nothing_stored(engine: Engine) -> None:
    store_batch(engine, EDGE, card_use_batch(EDGE, range(1, 6)), MAX)
    replay = batch(EDGE, [event(2, card_used("FORGED")), event(3, card_used("FORGED"))])
    result = store_batch(engine, EDGE, replay, MAX)
    assert result == IngestResult(ack_seq=5, stored=0, duplicates=2, rejected=None)
    assert "FORGED" not in {use.id_tag for use in rows(engine, card_uses)}
    assert "FORGED" not in {row.data["id_tag"] for row in rows(engine, events)}


def test_a_gap_is_refused_then_the_batch_is_taken_after_the_missing_one(engine: Engine) -> None:
    store_batch(engine, EDGE, card_use_batch(EDGE, range(1, 3)), MAX)
    later = card_use_batch(EDGE, range(5, 7))
    refused = store_batch(engine, EDGE, later, MAX)
    # The edge learns where the cloud stands: 2.
    assert refused.rejected == "gap" and refused.ack_seq == 2 and refused.stored == 0
    assert "expected seq 3" in refused.detail
    assert stored_seqs(engine) == [1, 2]
    assert count(engine, card_uses) == 2
    assert rejected(engine, EDGE, "gap") == 1

    assert store_batch(engine, EDGE, card_use_batch(EDGE, range(3, 5)), MAX).ack_seq == 4
    assert store_batch(engine, EDGE, later, MAX).ack_seq == 6
    assert stored_seqs(engine) == [1, 2, 3, 4, 5, 6]


def test_a_gap_inside_a_batch_refuses_all_of_it(engine: Engine) -> None:
    holed = batch(EDGE, [event(1, card_used()), event(2, card_used()), event(4, card_used())])
    result = store_batch(engine, EDGE, holed, MAX)
    assert (result.rejected, result.ack_seq) == ("gap", 0)
    assert count(engine, events) == 0 and count(engine, card_uses) == 0


def test_an_edge_id_other_than_the_topics_is_refused(engine: Engine) -> None:
    result = store_batch(engine, EDGE, card_use_batch("site-8", range(1, 3)), MAX)
    assert result == IngestResult(
        None, 0, 0, "wrong_edge", "the batch names edge 'site-8', the topic 'site-7'"
    )
    assert count(engine, events) == 0 and count(engine, edges) == 0
    assert rejected(engine, EDGE, "wrong_edge") == 1


def test_bad_json_is_refused_and_counted_with_a_sample(engine: Engine) -> None:
    for _ in range(2):
        result = store_batch(engine, EDGE, b'{"edge_id": "site-7", "events": [', MAX)
        assert (result.ack_seq, result.rejected) == (None, "not_json")
    (counted,) = rejection_counts(engine)
    assert (counted.source, counted.reason, counted.count) == (EDGE, "not_json", 2)
    assert '{"edge_id": "site-7", "events": [' in counted.sample
    assert count(engine, events) == 0 and count(engine, edges) == 0


def test_a_schema_violation_is_refused(engine: Engine) -> None:
    unknown_kind = batch(EDGE, [event(1, {"kind": "charger.exploded", "charger_id": "CP-1"})])
    missing_field = batch(EDGE, [event(1, {"kind": "card.used", "id_tag": "CARD-1"})])
    not_a_time = batch(EDGE, [event(1, card_used(), at="yesterday")])
    for payload in (unknown_kind, missing_field, not_a_time):
        result = store_batch(engine, EDGE, payload, MAX)
        assert (result.ack_seq, result.rejected) == (None, "invalid"), payload
    assert "source: Field required" in store_batch(engine, EDGE, missing_field, MAX).detail
    assert rejected(engine, EDGE, "invalid") == 4
    assert count(engine, events) == 0 and count(engine, edges) == 0


def test_an_event_that_fails_while_applied_leaves_nothing_of_its_batch(engine: Engine) -> None:
    # Event 1 is stored and applied before event 2's start time turns out unreadable:
    # the whole transaction goes, so no half of the batch remains.
    payload = batch(
        EDGE,
        [event(1, card_used()), event(2, transaction_started(41, started_at="at noon"))],
    )
    result = store_batch(engine, EDGE, payload, MAX)
    assert (result.ack_seq, result.rejected) == (None, "invalid")
    assert "started_at 'at noon'" in result.detail
    assert count(engine, events) == 0 and count(engine, card_uses) == 0
    assert count(engine, transactions) == 0 and count(engine, edges) == 0
    assert rejected(engine, EDGE, "invalid") == 1


def test_an_oversized_payload_is_refused_unread(engine: Engine) -> None:
    payload = card_use_batch(EDGE, range(1, 40))
    result = store_batch(engine, EDGE, payload, max_bytes=1024)
    assert (result.ack_seq, result.rejected) == (None, "too_large")
    assert f"{len(payload)} bytes, more than 1024" == result.detail
    (counted,) = rejection_counts(engine)
    assert counted.reason == "too_large" and len(counted.sample) < 400
    assert count(engine, events) == 0


def test_presence_is_recorded_and_the_last_will_keeps_what_was_known(engine: Engine) -> None:
    online = status(software_version="0.3.0", backlog=12, oldest_age_s=40.5, cards_version=3)
    assert record_status(engine, EDGE, online)
    (edge,) = rows(engine, edges)
    assert (edge.state, edge.software_version, edge.backlog) == ("online", "0.3.0", 12)
    assert edge.cards_version_reported == 3 and edge.status["oldest_age_s"] == 40.5
    assert record_status(engine, EDGE, json.dumps({"state": "offline"}).encode())
    (edge,) = rows(engine, edges)
    assert (edge.state, edge.software_version, edge.backlog) == ("offline", "0.3.0", 12)


def test_a_bad_status_is_refused_and_counted(engine: Engine) -> None:
    assert not record_status(engine, EDGE, status(state="asleep"))
    assert not record_status(engine, EDGE, b"online")
    assert not record_status(engine, "bad/edge id", status())
    reasons = {(r.source, r.reason) for r in rejection_counts(engine)}
    assert reasons == {(EDGE, "invalid"), (EDGE, "not_json"), ("bad/edge id", "wrong_edge")}
    assert count(engine, edges) == 0


def test_long_text_from_an_edge_is_stored_whole(engine: Engine) -> None:
    long_tag, long_charger = "T" * 300, "charger-" + "x" * 400
    payload = batch(EDGE, [event(1, card_used(long_tag, charger_id=long_charger))])
    assert store_batch(engine, EDGE, payload, MAX).ack_seq == 1
    (use,) = rows(engine, card_uses)
    assert (use.id_tag, use.charger_id) == (long_tag, long_charger)


def test_values_no_column_can_hold_are_refused_alike_on_every_store(engine: Engine) -> None:
    too_big = batch(EDGE, [event(1, transaction_started(2**70))])
    with_nul = batch(EDGE, [event(1, card_used("CARD\u0000-1"))])
    for payload in (too_big, with_nul):
        result = store_batch(engine, EDGE, payload, MAX)
        assert (result.ack_seq, result.rejected) == (None, "invalid"), result
    assert rejected(engine, EDGE, "invalid") == 2
    assert count(engine, events) == 0 and count(engine, transactions) == 0
    # An escaped backslash before "u0000" is no NUL.
    assert (
        store_batch(engine, EDGE, batch(EDGE, [event(1, card_used("a\\u0000"))]), MAX).ack_seq == 1
    )
