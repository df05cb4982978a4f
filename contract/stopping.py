"""Stopping a link's tasks for sure. On Python 3.11 `asyncio.wait_for` can swallow a
cancellation when the awaited future finishes at the same moment (the task then goes on,
and a loop in it waits forever): a task is cancelled again until it is done."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

# Seconds between two cancellations of a task that goes on.
CANCEL_AGAIN_SECONDS = 0.5


async def cancel_until_done(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel every task, and again any that did not end, until all have."""
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_AGAIN_SECONDS)
        pending = [task for task in pending if not task.done()]
