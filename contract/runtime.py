"""The daemon's runtime idioms, written once: waiting until a stop (or a while), running
work that never ends by itself until a stop, connecting unless a stop comes first, and
retrying a connection with back-off.
Signals and the bounded stop live in contract/shutdown.py. Both daemons use them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from contract.stopping import cancel_until_done

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_RETRY_SECONDS = 1.0
LONGEST_RETRY_SECONDS = 60.0


async def until_stopped(
    stop: asyncio.Event, seconds: float | None = None, *, or_when: asyncio.Event | None = None
) -> bool:
    """Wait until `stop` is set, `seconds` have passed or (if given) `or_when` is set;
    True when `stop` is set. `asyncio.timeout`, not `wait_for`: on Python 3.11 the latter
    can swallow a cancellation that comes as the event is set."""
    if stop.is_set():
        return True
    waits = [asyncio.ensure_future(stop.wait())]
    if or_when is not None:
        waits.append(asyncio.ensure_future(or_when.wait()))
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return stop.is_set()


async def run_until_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run `work` until it returns or `stop` is set (then cancel it); what it raised is
    raised here."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopping):
            pending.cancel()
        await asyncio.gather(task, stopping, return_exceptions=True)
    error = task.exception() if task.done() and not task.cancelled() else None
    if error is not None:
        raise error


@contextlib.asynccontextmanager
async def entered_unless_stopped(
    manager: AbstractAsyncContextManager[T], stop: asyncio.Event
) -> AsyncIterator[T | None]:
    """`async with manager` (a connection), unless `stop` is set before it is entered:
    then the entering (a connect waiting for a peer that never answers) is cut short at
    once and the block gets None.

    The entering runs in the caller's own task, under a deadline that the stop moves to
    now: a client such as aiomqtt's is entered, used and left by one task (entered in a
    task of its own, the aggregator's client stopped receiving after a few seconds)."""
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as exits:
        entered: T | None = None
        waiting = True
        try:
            async with asyncio.timeout(None) as deadline:

                def stop_now(_: object) -> None:
                    if waiting:
                        deadline.reschedule(loop.time())

                stopping = asyncio.ensure_future(stop.wait())
                stopping.add_done_callback(stop_now)
                try:
                    entered = await exits.enter_async_context(manager)
                finally:
                    waiting = False
                    stopping.remove_done_callback(stop_now)
                    await cancel_until_done([stopping])
        except TimeoutError:
            if not deadline.expired():
                raise  # the manager's own, not the stop's
            entered = None  # stopped while entering
        # Entered as the stop came: the block has it, and sees the stop itself.
        yield entered


class Backoff:
    """Seconds to wait before the next attempt: `first`, doubled after each failure up to
    `longest`, back to `first` once an attempt succeeds."""

    def __init__(
        self, first: float = FIRST_RETRY_SECONDS, longest: float = LONGEST_RETRY_SECONDS
    ) -> None:
        self.first = first
        self.longest = longest
        self.seconds = first

    def succeeded(self) -> None:
        self.seconds = self.first

    def failed(self) -> float:
        """The wait before the next attempt; the one after it is longer."""
        seconds = self.seconds
        self.seconds = min(self.seconds * 2, self.longest)
        return seconds


async def retry_with_backoff(
    stop: asyncio.Event,
    attempt: Callable[[], Awaitable[None]],
    *,
    expected: type[Exception],
    down: str,
    failed: str,
    after_each: Callable[[], None] | None = None,
    backoff: Backoff | None = None,
    logger: logging.Logger = log,
) -> None:
    """Run `attempt` (one connection's life) again and again until `stop` is set, waiting
    with back-off after each end. An `expected` error (the peer is unreachable) is a
    warning "`down`: error; trying again in N s"; anything else is logged with its
    traceback as "`failed`; trying again in N s" and retried too: a failing connection
    never ends the process. `after_each` runs after every end (to mark the link down)."""
    backoff = backoff or Backoff()
    while not stop.is_set():
        try:
            await attempt()
            backoff.succeeded()
        except* expected as errors:
            logger.warning(
                "%s: %s; trying again in %.0f s", down, errors.exceptions[0], backoff.seconds
            )
        except* Exception:
            logger.exception("%s; trying again in %.0f s", failed, backoff.seconds)
        if after_each is not None:
            after_each()
        await until_stopped(stop, backoff.failed())
