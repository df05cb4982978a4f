"""The aggregator's inbound queue: messages from edges wait here for a worker, bounded in
total and per edge, and are served edge by edge in turn, so one edge that floods the
aggregator only ever waits behind itself.

Each edge has its own first-in-first-out queue; edges with messages wait in a ring. A
worker takes the next edge from the ring, handles one of its messages and puts the edge
back at the end if it has more; an edge is never in two workers' hands at once, so its
messages are handled in the order they came. A message beyond an edge's share
(`per_edge`) or the total (`total`) is dropped and counted: what an edge sends is either
sent again until acknowledged (event batches, firmware requests) or sent again anyway
(its status), so nothing is lost.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

Item = TypeVar("Item")
DropReason = Literal["edge_share", "total"]


@dataclass
class InboundStats:
    queued: int = 0
    handled: int = 0
    failed: int = 0  # handling raised: logged, the next message taken
    dropped: Counter[str] = field(default_factory=Counter)  # by reason
    dropped_by_edge: Counter[str] = field(default_factory=Counter)


class InboundQueue(Generic[Item]):
    def __init__(self, total: int, per_edge: int, stats: InboundStats | None = None) -> None:
        self.total = total
        self.per_edge = per_edge
        # Kept by the aggregator across MQTT sessions (each session has its own queue).
        self.stats = stats or InboundStats()
        self._queues: dict[str, deque[Item]] = {}
        self._ring: deque[str] = deque()  # edges with messages and no worker on them
        self._busy: set[str] = set()
        self._size = 0
        self._ready = asyncio.Event()

    def offer(self, edge_id: str, item: Item) -> DropReason | None:
        """Queue `item` from `edge_id`; the reason it was dropped instead, if it was."""
        queue = self._queues.get(edge_id)
        reason: DropReason | None = None
        if queue is not None and len(queue) >= self.per_edge:
            reason = "edge_share"
        elif self._size >= self.total:
            reason = "total"
        if reason is not None:
            self.stats.dropped[reason] += 1
            self.stats.dropped_by_edge[edge_id] += 1
            if len(self.stats.dropped_by_edge) > 10_000:  # bound the counters too
                self.stats.dropped_by_edge = Counter(
                    dict(self.stats.dropped_by_edge.most_common(1000))
                )
            return reason
        if queue is None:
            queue = self._queues[edge_id] = deque()
        queue.append(item)
        self._size += 1
        self.stats.queued = self._size
        if edge_id not in self._busy and len(queue) == 1:
            self._ring.append(edge_id)
            self._ready.set()
        return None

    async def take(self) -> tuple[str, Item]:
        """The next edge's oldest message; the edge stays taken until `done(edge_id)`."""
        while not self._ring:
            self._ready.clear()
            await self._ready.wait()
        edge_id = self._ring.popleft()
        queue = self._queues[edge_id]
        item = queue.popleft()
        self._size -= 1
        self.stats.queued = self._size
        self._busy.add(edge_id)
        if self._ring:
            self._ready.set()  # another worker may take the next edge
        return edge_id, item

    def done(self, edge_id: str, *, failed: bool = False) -> None:
        """The worker finished with `edge_id`'s message: the edge takes its turn again."""
        self._busy.discard(edge_id)
        self.stats.handled += 1
        if failed:
            self.stats.failed += 1
        queue = self._queues.get(edge_id)
        if queue:
            self._ring.append(edge_id)
            self._ready.set()
        elif queue is not None:
            del self._queues[edge_id]

    def __len__(self) -> int:
        return self._size
