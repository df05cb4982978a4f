"""Storing edges' event batches: exactly once, in order, and every bad payload refused,
counted and leaving nothing behind."""

from __future__ import annotations

import json

from sqlalchemy import Engine, text

from cloud.store.fleet import list_edges, rejection_counts
from cloud.store.ingest import IngestResult, record_status, store_batch
from cloud.store.schema import (
    card_uses,
    charger_jobs,
    connectors,
    edges,
    events,
    quarantined_events,
    transactions,
)
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


def test_a_batch_that_is_no_batch_is_refused_whole(engine: Engine) -> None:
    no_seq = json.dumps({"edge_id": EDGE, "events": [{"at": "x", "data": {}}]}).encode()
    seq_as_text = batch(EDGE, [{"seq": "1", "at": "2026-03-01T10:00:00Z", "data": card_used()}])
    no_events = json.dumps({"edge_id": EDGE, "events": []}).encode()
    extra_key = json.dumps({"edge_id": EDGE, "events": [event(1, card_used())], "x": 1}).encode()
    for payload in (no_seq, seq_as_text, no_events, extra_key):
        result = store_batch(engine, EDGE, payload, MAX)
        # Nothing can be placed in the edge's sequence: no ack.
        assert (result.ack_seq, result.rejected) == (None, "invalid"), payload
    assert rejected(engine, EDGE, "invalid") == 4
    assert count(engine, events) == 0 and count(engine, edges) == 0


def test_an_event_that_breaks_the_schema_is_quarantined_and_the_others_stored(
    engine: Engine,
) -> None:
    unknown_kind = {"kind": "charger.exploded", "charger_id": "CP-1"}
    missing_field = {"kind": "card.used", "id_tag": "CARD-1"}
    payload = batch(
        EDGE,
        [
            event(1, card_used("A")),
            event(2, unknown_kind),
            event(3, card_used("B")),
            event(4, missing_field),
            event(5, card_used("C"), at="yesterday"),
            event(6, card_used("D")),
        ],
    )
    result = store_batch(engine, EDGE, payload, MAX)
    assert result.ack_seq == 6 and result.stored == 3 and result.rejected is None
    assert result.quarantined == ((2, "invalid"), (4, "invalid"), (5, "invalid"))
    assert result.quarantined_total == 3
    assert stored_seqs(engine) == [1, 3, 6]
    assert [use.id_tag for use in rows(engine, card_uses, card_uses.c.seq)] == ["A", "B", "D"]
    put_aside = {row.seq: row for row in rows(engine, quarantined_events)}
    assert sorted(put_aside) == [2, 4, 5]
    assert put_aside[2].kind == "charger.exploded" and put_aside[2].reason == "invalid"
    assert "source: Field required" in put_aside[4].detail
    assert "'yesterday' is not an ISO 8601 time" in put_aside[5].detail
    assert json.loads(put_aside[2].raw)["data"] == unknown_kind
    (edge,) = rows(engine, edges)
    assert edge.last_seq == 6 and edge.quarantined_events == 3
    # Repeated (the ack was lost): nothing stored or quarantined twice.
    again = store_batch(engine, EDGE, payload, MAX)
    assert (again.ack_seq, again.stored, again.duplicates, again.quarantined) == (6, 0, 6, ())
    assert again.quarantined_total == 3 and count(engine, quarantined_events) == 3


def test_values_no_store_holds_are_quarantined_alike_on_every_store(engine: Engine) -> None:
    beyond_64_bits = transaction_started(2**70)
    with_nul = card_used("CARD\u0000-1")
    lone_surrogate = card_used("CARD-\ud800")
    not_finite = {
        "kind": "edge.health",
        "software_version": "1",
        "uptime_s": 12345.678,  # becomes 1e400 below: JSON has it, no store holds infinity
        "backlog": 0,
        "oldest_age_s": None,
        "disk_free_mb": 1.0,
    }
    a_time_that_is_not = transaction_started(7, started_at="at noon")
    payload = (
        json.dumps(
            {
                "edge_id": EDGE,
                "events": [
                    event(1, beyond_64_bits),
                    event(2, with_nul),
                    event(3, card_used("GOOD")),
                    event(4, lone_surrogate),
                    event(5, not_finite),
                    event(6, a_time_that_is_not),
                ],
            }
        )
        .encode()
        .replace(b"12345.678", b"1e400")
    )
    result = store_batch(engine, EDGE, payload, MAX)
    assert result.ack_seq == 6 and result.stored == 1
    assert [seq for seq, _ in result.quarantined] == [1, 2, 4, 5, 6]
    assert stored_seqs(engine) == [3]
    details = [row.detail for row in rows(engine, quarantined_events, quarantined_events.c.seq)]
    assert "transaction_id: 1180591620717411303424 is beyond 64 bits" in details[0]
    assert "NUL or lone surrogate" in details[1] and "NUL or lone surrogate" in details[2]
    assert "uptime_s: inf is not finite" in details[3]
    assert "started_at: 'at noon' is not an ISO 8601 time" in details[4]
    # Kept escaped: the raw sample itself is text any store holds.
    assert all(row.raw.isascii() for row in rows(engine, quarantined_events))
    assert count(engine, transactions) == 0
    # An escaped backslash before "u0000" is no NUL.
    taken = store_batch(engine, EDGE, batch(EDGE, [event(7, card_used("a\\u0000"))]), MAX)
    assert taken.ack_seq == 7 and taken.quarantined == ()


def test_charger_numbers_beyond_32_bits_are_stored_on_every_store(engine: Engine) -> None:
    # PostgreSQL's INTEGER ends at 2^31: connector ids and request ids are BIGINT.
    status = {
        "kind": "charger.status",
        "charger_id": "CP-1",
        "connector_id": 3_000_000_000,
        "status": "Available",
        "error_code": "NoError",
    }
    job = {"kind": "charger.job", "charger_id": "CP-1", "job": "log", "status": "Uploaded"}
    payload = batch(
        EDGE,
        [
            event(1, status),
            event(2, job | {"request_id": 2**40}),
            event(3, card_used(connector_id=2**33, charger_id="CP-1")),
            event(4, transaction_started(5, connector_id=2**35)),
        ],
    )
    result = store_batch(engine, EDGE, payload, MAX)
    assert (result.ack_seq, result.stored, result.quarantined) == (4, 4, ())
    (connector,) = rows(engine, connectors)
    assert connector.connector_id == 3_000_000_000
    assert rows(engine, charger_jobs)[0].request_id == 2**40
    assert rows(engine, card_uses)[0].connector_id == 2**33
    assert rows(engine, transactions)[0].connector_id == 2**35


def test_an_event_larger_than_the_limit_is_quarantined_with_a_bounded_sample(
    engine: Engine,
) -> None:
    answer = {"configurationKey": [{"key": "Big", "value": "x" * 200_000}]}
    big = {"kind": "command.result", "command_id": "c-1", "status": "done", "response": answer}
    payload = batch(EDGE, [event(1, card_used("A")), event(2, big), event(3, card_used("B"))])
    result = store_batch(engine, EDGE, payload, MAX, max_event_bytes=65_536, sample_bytes=1000)
    assert result.ack_seq == 3 and result.quarantined == ((2, "too_large"),)
    assert stored_seqs(engine) == [1, 3]
    (kept,) = rows(engine, quarantined_events)
    assert kept.kind == "command.result" and len(kept.raw) == 1000
    assert kept.raw_bytes > 200_000 and "more than 65536" in kept.detail


def test_an_event_the_store_itself_refuses_is_quarantined_alone(engine: Engine) -> None:
    # A rule of the database that no check of the aggregator knows about: the batch is
    # taken again event by event, each in a savepoint, and only that event is put aside.
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("ALTER TABLE card_uses ADD CONSTRAINT no_poison CHECK (id_tag <> 'POISON')")
            )
        else:
            connection.execute(
                text(
                    "CREATE TRIGGER no_poison BEFORE INSERT ON card_uses "
                    "WHEN NEW.id_tag = 'POISON' BEGIN SELECT RAISE(ABORT, 'poison'); END"
                )
            )
    try:
        payload = batch(
            EDGE,
            [event(1, card_used("A")), event(2, card_used("POISON")), event(3, card_used("B"))],
        )
        result = store_batch(engine, EDGE, payload, MAX)
        assert result.ack_seq == 3 and result.quarantined == ((2, "unstorable"),)
        assert stored_seqs(engine) == [1, 3]
        assert [use.id_tag for use in rows(engine, card_uses, card_uses.c.seq)] == ["A", "B"]
        (kept,) = rows(engine, quarantined_events)
        assert kept.detail.startswith("the store refused it")
    finally:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("ALTER TABLE card_uses DROP CONSTRAINT no_poison"))
            else:
                connection.execute(text("DROP TRIGGER no_poison"))


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


def epoch_batch(epoch: str | None, seqs: range, tag: str) -> bytes:
    document = json.loads(card_use_batch(EDGE, seqs, tag))
    if epoch is not None:
        document["epoch"] = epoch
    return json.dumps(document).encode()


FIRST, SECOND = "a" * 32, "b" * 32


def test_an_edge_from_before_epochs_keeps_its_sequence_with_its_first_epoch(
    engine: Engine,
) -> None:
    assert store_batch(engine, EDGE, epoch_batch(None, range(1, 4), "OLD"), MAX).ack_seq == 3
    # The same store, upgraded: its epoch is recorded, its sequence goes on.
    result = store_batch(engine, EDGE, epoch_batch(FIRST, range(3, 6), "OLD"), MAX)
    assert (result.ack_seq, result.stored, result.duplicates, result.epoch) == (5, 2, 1, FIRST)
    (edge,) = rows(engine, edges)
    assert (edge.epoch, edge.seq_offset, edge.last_seq) == (FIRST, 0, 5)
    # A batch with no epoch now comes from no store the edge has: refused, no ack.
    stale = store_batch(engine, EDGE, epoch_batch(None, range(6, 7), "X"), MAX)
    assert (stale.ack_seq, stale.rejected) == (None, "old_epoch")


def test_a_new_store_starts_again_at_seq_1_after_the_old_stores_events(engine: Engine) -> None:
    store_batch(engine, EDGE, epoch_batch(FIRST, range(1, 5), "OLD"), MAX)
    # The new store's first batch does not start at 1: a gap, and no switch.
    holed = store_batch(engine, EDGE, epoch_batch(SECOND, range(2, 4), "NEW"), MAX)
    assert (holed.rejected, holed.ack_seq, holed.epoch) == ("gap", 0, SECOND)
    assert rows(engine, edges)[0].epoch == FIRST
    result = store_batch(engine, EDGE, epoch_batch(SECOND, range(1, 4), "NEW"), MAX)
    assert (result.ack_seq, result.stored, result.duplicates, result.epoch) == (3, 3, 0, SECOND)
    assert stored_seqs(engine) == [1, 2, 3, 4, 5, 6, 7]
    tags = [use.id_tag for use in rows(engine, card_uses, card_uses.c.seq)]
    assert tags == ["OLD-1", "OLD-2", "OLD-3", "OLD-4", "NEW-1", "NEW-2", "NEW-3"]
    (edge,) = rows(engine, edges)
    assert (edge.epoch, edge.seq_offset, edge.last_seq) == (SECOND, 4, 3)
    view = list_edges(engine, parse_time("2026-03-01T10:00:00Z"))[0]
    assert (view.epoch, view.epochs) == (SECOND, 2)
    # The new store's repeat is a duplicate; the old store's late batch is refused.
    again = store_batch(engine, EDGE, epoch_batch(SECOND, range(1, 4), "NEW"), MAX)
    assert (again.ack_seq, again.duplicates) == (3, 3)
    late = store_batch(engine, EDGE, epoch_batch(FIRST, range(5, 6), "LATE"), MAX)
    assert (late.ack_seq, late.rejected) == (None, "old_epoch")
    assert "replaced by" in late.detail
    assert stored_seqs(engine) == [1, 2, 3, 4, 5, 6, 7]
