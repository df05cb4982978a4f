"""Two aggregator replicas given one edge's batches at once (a redelivery reaching both)
store each event once and in order."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine

from cloud.store.fleet import list_transactions
from cloud.store.ingest import IngestResult, store_batch
from cloud.store.schema import card_uses, edges, events
from tests.cloud.payloads import batch, card_used, event, transaction_meter, transaction_started
from tests.cloud.rows import count, rows

EDGE = "site-7"
BATCHES = 30
PER_BATCH = 5


def edge_batches() -> list[tuple[int, bytes]]:
    """(last seq, payload) of each batch: a transaction metered by every other event."""
    sent: list[tuple[int, bytes]] = []
    for number in range(BATCHES):
        seqs = range(number * PER_BATCH + 1, (number + 1) * PER_BATCH + 1)
        datas = [
            transaction_started(1)
            if seq == 1
            else transaction_meter(1, energy_wh=seq * 10)
            if seq % 2
            else card_used(f"CARD-{seq}")
            for seq in seqs
        ]
        sent.append(
            (
                seqs[-1],
                batch(EDGE, [event(seq, data) for seq, data in zip(seqs, datas, strict=True)]),
            )
        )
    return sent


def replica(engine: Engine, start: threading.Barrier) -> list[IngestResult]:
    """Take every batch in order, as a replica that receives them all would."""
    start.wait()
    results = []
    for last_seq, payload in edge_batches():
        result = store_batch(engine, EDGE, payload, 1_048_576)
        assert result.rejected is None and result.ack_seq is not None, result
        assert result.ack_seq >= last_seq
        results.append(result)
    return results


def test_two_replicas_store_each_event_once_in_order(engine: Engine) -> None:
    start = threading.Barrier(2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(replica, engine, start) for _ in range(2)]
        first, second = (future.result(timeout=60) for future in futures)
    total = BATCHES * PER_BATCH
    # Each batch was stored by one replica and found stored by the other.
    for mine, theirs in zip(first, second, strict=True):
        assert sorted((mine.stored, theirs.stored)) == [0, PER_BATCH]
        assert mine.stored + mine.duplicates == theirs.stored + theirs.duplicates == PER_BATCH
    assert sum(result.stored for result in first + second) == total
    assert [row.seq for row in rows(engine, events, events.c.seq)] == list(range(1, total + 1))
    assert rows(engine, edges)[0].last_seq == total
    assert count(engine, card_uses) == total // 2
    # Meters applied in order: the transaction holds the last one's energy.
    (transaction,) = list_transactions(engine)
    assert transaction.energy_wh == (total - 1) * 10
