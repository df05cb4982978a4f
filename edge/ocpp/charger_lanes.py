"""Work for many chargers at once, where one silent charger must cost only its own time.

Each charger has a lane: at most one piece of work runs in it at a time (OCPP-J lets a
central system have one call outstanding per charger anyway). Work asked for while the
lane is busy runs once after it, however often it was asked for, so it should read the
state it acts on when it runs (the newest shares, the newest card list). At most
`concurrency` lanes run at once; the rest wait for a free place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from edge import log_context

log = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]

# Lanes running at once: calls to as many chargers are in flight at most.
CONCURRENT_CHARGERS = 16


class ChargerLanes:
    """`async with ChargerLanes() as lanes: lanes.submit(charger_id, work)`; the block's
    end cancels what still runs."""

    def __init__(self, concurrency: int = CONCURRENT_CHARGERS) -> None:
        self._places = asyncio.Semaphore(concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: dict[str, Work] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    async def __aenter__(self) -> ChargerLanes:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._again.clear()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def busy(self, charger_id: str) -> bool:
        return charger_id in self._running

    def submit(self, charger_id: str, work: Work) -> None:
        """Run `work` in the charger's lane: now, or once after what runs there."""
        if charger_id in self._running:
            self._again[charger_id] = work
            return
        self._idle.clear()
        self._running[charger_id] = asyncio.create_task(
            self._lane(charger_id, work), name=f"lane-{charger_id}"
        )

    async def idle(self) -> None:
        """Wait until no lane has work."""
        await self._idle.wait()

    async def _lane(self, charger_id: str, work: Work) -> None:
        log_context.CHARGER_ID.set(charger_id)
        try:
            next_work: Work | None = work
            while next_work is not None:
                async with self._places:
                    try:
                        await next_work()
                    except Exception:
                        # Confined to this charger's lane; the others go on.
                        log.exception("work for %s failed", charger_id)
                next_work = self._again.pop(charger_id, None)
        finally:
            del self._running[charger_id]
            if not self._running:
                self._idle.set()
