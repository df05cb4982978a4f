"""Waiting in tests for what another process or peer does on its own time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll until `predicate()` holds; used where the change has no event to await
    (a row another connection writes, a peer's own state)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - nothing to await across the boundary
            await asyncio.sleep(0.01)


async def eventually_answers(predicate: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Like `eventually`, for a predicate that has to ask a server (an HTTP API)."""
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110 - the server has no event to give
            await asyncio.sleep(0.02)
