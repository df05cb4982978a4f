"""Re-pricing in the background: after a tariff change (or an edge's move to another
fleet) the store holds a job on its re-pricing list (cloud/store/repricing.py); every
replica runs a `Repricer`, which works through the jobs a batch per transaction
(`sessions.reprice_batch` sessions at most, fewer while a batch takes longer than
`sessions.reprice_batch_seconds`: a busy store gets shorter batches), pausing
`sessions.reprice_pause` seconds between batches so that ingest takes its turns at the
store, and looks for new jobs every `sessions.reprice_poll` seconds, or at once when
this replica queued one (`wake`).

A failing store is logged and tried again after a pause; nothing here ends the process.
On PostgreSQL two replicas work on different jobs (a job being worked on is skipped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from cloud.settings import SessionSettings
from cloud.store.tariffs import reprice_batch
from cloud.store.times import utc_now
from contract.runtime import until_stopped

log = logging.getLogger(__name__)

# Seconds before trying again after the store failed.
RETRY_SECONDS = 5.0


@dataclass
class RepricingStats:
    """This replica's re-pricing, for GET /api/stats/repricing."""

    batches: int = 0
    sessions: int = 0
    jobs_finished: int = 0
    last_batch_at: datetime | None = None
    # Seconds the longest batch took (what ingest may have waited for, on SQLite).
    longest_batch_s: float = 0.0
    last_error: str | None = None


class Repricer:
    def __init__(self, settings: SessionSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.stats = RepricingStats()
        self._woken = asyncio.Event()
        self.size = settings.reprice_batch  # the next batch's, kept to its time

    def wake(self) -> None:
        """A job was queued on this replica: start on it now."""
        self._woken.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Work through the jobs until `stop` is set."""
        while not stop.is_set():
            self._woken.clear()
            began = time.perf_counter()
            try:
                batch = await asyncio.to_thread(reprice_batch, self.engine, self.size)
            except Exception as error:
                # The store may be away for a while: the job is where the last batch
                # left it, and is taken up again.
                self.stats.last_error = f"{type(error).__name__}: {str(error)[:300]}"
                log.exception("re-pricing: a batch failed")
                await until_stopped(stop, RETRY_SECONDS)
                continue
            if batch is None:
                await until_stopped(stop, self.settings.reprice_poll, or_when=self._woken)
                continue
            took = time.perf_counter() - began
            self._resize(took)
            stats = self.stats
            stats.longest_batch_s = max(stats.longest_batch_s, took)
            stats.batches += 1
            stats.sessions += batch.sessions
            stats.last_batch_at = utc_now()
            stats.last_error = None
            if batch.finished:
                stats.jobs_finished += 1
                log.info("re-pricing: job %d done", batch.job_id)
            await until_stopped(stop, self.settings.reprice_pause)

    def _resize(self, took: float) -> None:
        """The next batch's size: cut to the time a batch may take, grown back slowly
        (a quarter at a time) up to reprice_batch while batches are quick."""
        target, largest = self.settings.reprice_batch_seconds, self.settings.reprice_batch
        if took > target:
            self.size = max(1, int(self.size * target / took))
        else:
            self.size = min(largest, self.size + max(1, self.size // 4))
