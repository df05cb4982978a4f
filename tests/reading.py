"""Running a reader driver in a test: what it yields lands in a queue, its ReaderError
too, and leaving the block cancels it as the supervisor would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from edge.readers.taps import CardReader, RawUid, ReaderError, ReaderOpened

Reading = asyncio.Queue[RawUid | ReaderOpened | ReaderError]


@contextlib.asynccontextmanager
async def reading(reader: CardReader) -> AsyncIterator[Reading]:
    """`reader.read()` running in a task; the queue gets each item, then the error."""
    items: Reading = asyncio.Queue()

    async def consume() -> None:
        try:
            async for item in reader.read():
                items.put_nowait(item)
        except ReaderError as error:
            items.put_nowait(error)

    task = asyncio.create_task(consume())
    try:
        yield items
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_item(items: Reading, within: float = 5.0) -> RawUid | ReaderOpened | ReaderError:
    async with asyncio.timeout(within):
        return await items.get()
