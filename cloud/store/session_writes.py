"""What a batch of events adds to sessions once their rows are written: meter samples
(bounded per transaction), when each session was last heard of and how late its events
arrived, and the cost of the sessions that stopped.

The projections (cloud/store/projections.py) note these as they apply events; ingest
calls `flush` after the batch's row writes, in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    bindparam,
    case,
    func,
    insert,
    select,
    update,
)

from cloud.store.schema import UtcDateTime, meter_samples, transactions
from cloud.store.tariffs import price_sessions

# A transaction's samples beyond this many are not kept (sessions.max_meter_samples):
# a week at the edge's pace of one a minute.
DEFAULT_MAX_METER_SAMPLES = 10_080


@dataclass
class SessionWrites:
    edge_id: str
    received_at: datetime
    max_meter_samples: int = DEFAULT_MAX_METER_SAMPLES
    _delays: dict[int, float] = field(default_factory=dict)
    _samples: list[dict[str, Any]] = field(default_factory=list)
    _stopped: set[int] = field(default_factory=set)

    def heard(self, transaction_id: int, at: datetime) -> None:
        """An event of the transaction that happened `at` (edge clock) arrived now."""
        delay = max((self.received_at - at).total_seconds(), 0.0)
        self._delays[transaction_id] = max(self._delays.get(transaction_id, 0.0), delay)

    def sample(
        self,
        seq: int,
        transaction_id: int,
        at: datetime,
        meter_wh: int,
        energy_wh: int,
        power_w: float | None,
    ) -> None:
        self._samples.append(
            {
                "edge_id": self.edge_id,
                "seq": seq,
                "transaction_id": transaction_id,
                "at": at,
                "meter_wh": meter_wh,
                "energy_wh": energy_wh,
                "power_w": power_w,
            }
        )

    def stopped(self, transaction_id: int) -> None:
        self._stopped.add(transaction_id)

    @property
    def prices(self) -> bool:
        """Whether flushing prices sessions (then tariffs are held: hold_tariffs)."""
        return bool(self._stopped)

    def _insert_samples(self, connection: Connection) -> None:
        """The batch's samples, up to the limit per transaction (counted once per batch:
        an edge's batches take turns, under its row's lock)."""
        ids = {sample["transaction_id"] for sample in self._samples}
        held: dict[int, int] = {
            row[0]: int(row[1])
            for row in connection.execute(
                select(meter_samples.c.transaction_id, func.count())
                .where(
                    meter_samples.c.edge_id == self.edge_id,
                    meter_samples.c.transaction_id.in_(ids),
                )
                .group_by(meter_samples.c.transaction_id)
            )
        }
        kept = []
        for sample in self._samples:
            transaction_id = sample["transaction_id"]
            if held.get(transaction_id, 0) < self.max_meter_samples:
                held[transaction_id] = held.get(transaction_id, 0) + 1
                kept.append(sample)
        if kept:
            connection.execute(insert(meter_samples), kept)

    def flush(self, connection: Connection) -> None:
        if self._samples:
            self._insert_samples(connection)
        if self._delays:
            connection.execute(
                _HEARD,
                [
                    {
                        "key_edge": self.edge_id,
                        "key_transaction": transaction_id,
                        "now": self.received_at,
                        "delay": delay,
                    }
                    for transaction_id, delay in self._delays.items()
                ],
            )
        price_sessions(connection, self.edge_id, self._stopped)
        self._samples.clear()
        self._delays.clear()
        self._stopped.clear()


_DELAY = bindparam("delay", type_=Float())
_HEARD = (
    update(transactions)
    .where(
        transactions.c.edge_id == bindparam("key_edge"),
        transactions.c.transaction_id == bindparam("key_transaction"),
    )
    .values(
        synced_at=bindparam("now", type_=UtcDateTime()),
        sync_delay_s=case(
            (transactions.c.sync_delay_s.is_(None), _DELAY),
            (transactions.c.sync_delay_s < _DELAY, _DELAY),
            else_=transactions.c.sync_delay_s,
        ),
    )
)
