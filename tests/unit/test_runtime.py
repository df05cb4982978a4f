"""The runtime idioms every long-running part uses: waiting until a stop, running until a
stop, connecting unless a stop comes first, retrying with back-off."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

import pytest

from contract.runtime import (
    Backoff,
    entered_unless_stopped,
    retry_with_backoff,
    run_until_stopped,
    until_stopped,
)


async def test_until_stopped_says_whether_the_stop_came() -> None:
    stop = asyncio.Event()
    assert await until_stopped(stop, 0.01) is False
    asyncio.get_running_loop().call_soon(stop.set)
    assert await until_stopped(stop, 30) is True
    assert await until_stopped(stop) is True  # already set: at once


async def test_until_stopped_wakes_when_the_other_event_is_set() -> None:
    stop, changed = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_soon(changed.set)
    assert await asyncio.wait_for(until_stopped(stop, 30, or_when=changed), 10) is False


async def test_run_until_stopped_cancels_the_work_and_raises_what_it_raised() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    asyncio.get_running_loop().call_soon(stop.set)
    await asyncio.wait_for(run_until_stopped(stop, forever()), 10)
    assert cancelled.is_set()

    async def failing() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await run_until_stopped(asyncio.Event(), failing())


class Connection:
    """A connection whose connect waits until `answered` is set (or fails, with `refusal`)."""

    def __init__(self, refusal: Exception | None = None) -> None:
        self.answered = asyncio.Event()
        self.refusal = refusal
        self.connect_cancelled = False
        self.closed = False

    async def __aenter__(self) -> Connection:
        try:
            await self.answered.wait()
        except asyncio.CancelledError:
            self.connect_cancelled = True
            raise
        if self.refusal is not None:
            raise self.refusal
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.closed = True


async def test_entered_unless_stopped_gives_up_a_connect_when_the_stop_comes() -> None:
    stop, connection = asyncio.Event(), Connection()  # the peer never answers
    asyncio.get_running_loop().call_later(0.01, stop.set)
    async with asyncio.timeout(10), entered_unless_stopped(connection, stop) as entered:
        assert entered is None
    assert connection.connect_cancelled and not connection.closed


async def test_entered_unless_stopped_enters_and_leaves_the_connection() -> None:
    stop, connection = asyncio.Event(), Connection()
    connection.answered.set()
    async with entered_unless_stopped(connection, stop) as entered:
        assert entered is connection and not connection.closed
    assert connection.closed


async def test_entered_unless_stopped_raises_what_the_connect_raised() -> None:
    connection = Connection(refusal=ConnectionRefusedError("no broker"))
    connection.answered.set()
    with pytest.raises(ConnectionRefusedError):
        async with entered_unless_stopped(connection, asyncio.Event()):
            pytest.fail("entered a refused connection")


def test_backoff_doubles_up_to_the_longest_and_starts_again_after_a_success() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.succeeded()
    assert backoff.failed() == 1.0


async def test_retry_with_backoff_retries_every_failure_until_the_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    attempts: list[int] = []
    downs: list[int] = []

    async def attempt() -> None:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise ConnectionError("refused")
        if len(attempts) == 2:
            raise RuntimeError("a bug")
        stop.set()

    caplog.set_level(logging.INFO)
    await asyncio.wait_for(
        retry_with_backoff(
            stop,
            attempt,
            expected=ConnectionError,
            down="broker down",
            failed="link failed",
            after_each=lambda: downs.append(1),
            backoff=Backoff(0.01, 0.02),
        ),
        10,
    )
    assert len(attempts) == 3
    assert len(downs) == 3
    messages = [record.getMessage() for record in caplog.records]
    assert "broker down: refused; trying again in 0 s" in messages
    failed = [record for record in caplog.records if record.getMessage().startswith("link failed")]
    assert failed and failed[0].exc_info is not None
