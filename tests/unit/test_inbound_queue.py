"""The aggregator's inbound queue (cloud/inbound.py): bounded per edge and in total,
edges served in turn, one edge's messages in order and never in two hands at once."""

from __future__ import annotations

import asyncio

from cloud.inbound import InboundQueue


async def test_edges_are_served_in_turn_whatever_one_of_them_sent_first() -> None:
    queue: InboundQueue[int] = InboundQueue(total=100, per_edge=100)
    for number in range(5):
        assert queue.offer("flood", number) is None
    assert queue.offer("calm", 100) is None
    served = []
    for _ in range(6):
        edge_id, item = await queue.take()
        served.append((edge_id, item))
        queue.done(edge_id)
    # The calm edge's message goes second, not after the flood's five.
    assert served[:2] == [("flood", 0), ("calm", 100)]
    assert [item for edge_id, item in served if edge_id == "flood"] == [0, 1, 2, 3, 4]


async def test_an_edge_is_never_in_two_workers_hands() -> None:
    queue: InboundQueue[int] = InboundQueue(total=10, per_edge=10)
    queue.offer("site-1", 1)
    queue.offer("site-1", 2)
    edge_id, first = await queue.take()
    assert (edge_id, first) == ("site-1", 1)
    # The second worker waits: site-1's next message must follow the first's handling.
    second = asyncio.create_task(queue.take())
    await asyncio.sleep(0.01)
    assert not second.done()
    queue.done(edge_id)
    assert await asyncio.wait_for(second, 1) == ("site-1", 2)


def test_an_edge_beyond_its_share_and_a_full_queue_drop_and_count() -> None:
    queue: InboundQueue[int] = InboundQueue(total=3, per_edge=2)
    assert [queue.offer("flood", n) for n in range(3)] == [None, None, "edge_share"]
    assert queue.offer("calm", 1) is None
    assert queue.offer("third", 1) == "total"
    assert dict(queue.stats.dropped) == {"edge_share": 1, "total": 1}
    assert dict(queue.stats.dropped_by_edge) == {"flood": 1, "third": 1}
    assert len(queue) == 3
