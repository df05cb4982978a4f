"""Work the edge starts on its own for one charger (its local list after a boot, the
certificate it asked for): run in the daemon's task group, supervised, so that no
charger can end the group and with it the daemon."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from edge import log_context

log = logging.getLogger(__name__)


class ChargerWork:
    """`work.start(charger_id, "local-list", sync_local_list(server, charger_id))`.

    A failure is logged with the charger's id, counted per charger, and goes no
    further. At most `per_charger` pieces run for one charger at once; more are
    refused (logged, counted), so a charger cannot make the edge pile up work."""

    def __init__(self, tasks: asyncio.TaskGroup, per_charger: int) -> None:
        self._tasks = tasks
        self.per_charger = per_charger
        self.running: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def start(self, charger_id: str, name: str, work: Coroutine[Any, Any, None]) -> None:
        if self.running[charger_id] >= self.per_charger:
            work.close()
            self.refused[charger_id] += 1
            log.warning(
                "%s for %s not started: %d pieces of work already run for it",
                name,
                charger_id,
                self.running[charger_id],
            )
            return
        self.running[charger_id] += 1
        supervised = self._supervise(charger_id, name, work)
        self._tasks.create_task(supervised, name=f"{name}:{charger_id}")

    async def _supervise(self, charger_id: str, name: str, work: Coroutine[Any, Any, None]) -> None:
        log_context.CHARGER_ID.set(charger_id)
        try:
            await work
        except Exception:  # confined to this charger's work: logged and counted
            self.failures[charger_id] += 1
            log.exception("%s for %s failed", name, charger_id)
        finally:
            self.running[charger_id] -= 1
            if not self.running[charger_id]:
                del self.running[charger_id]
