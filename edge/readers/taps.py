"""What every reader driver shares: the tap, the driver interface, the errors, and the
hand-off from a driver's blocking thread to the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

# What a driver reads: the UID's bytes (NFC, RC522) or the text a reader sends
# (serial, keyboard-wedge), which `edge.readers.uid` turns into the canonical form.
RawUid = bytes | str


@dataclass(frozen=True, slots=True)
class CardTap:
    """A card presented to a reader. `uid` is canonical: upper-case hex, no separators."""

    reader_id: str
    uid: str
    at: datetime


class ReaderOpened:
    """Yielded once by `CardReader.read()` when the device is open and reading."""


OPENED = ReaderOpened()


class ReaderError(Exception):
    """The reader cannot be used (absent, unplugged, refused): the supervisor reopens it."""


class CardReader(Protocol):
    """A reader driver. `read()` opens the device, yields OPENED, then one RawUid per
    card read until it is cancelled; it raises ReaderError when the device is missing or
    goes away. It need not debounce: the supervisor drops a card held on the reader."""

    def read(self) -> AsyncIterator[RawUid | ReaderOpened]: ...

    def describe(self) -> str:
        """The device, for log lines ("nfcpy usb:054c:06c1", "/dev/ttyAMA0 9600 baud")."""
        ...


# A blocking read loop: open the device, `emit(OPENED)`, then `emit(uid)` for each card;
# return when `stopping` is set; raise ReaderError when the device goes away.
BlockingReadLoop = Callable[[Callable[[RawUid | ReaderOpened], None], threading.Event], None]

_DONE = object()


async def read_in_thread(
    loop_body: BlockingReadLoop, name: str
) -> AsyncIterator[RawUid | ReaderOpened]:
    """Run a blocking driver in its own thread and yield what it emits on the event loop.

    Leaving the iteration (cancellation, break) sets the stop event and waits for the
    thread, so a device is never left open behind the caller's back.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stopping = threading.Event()
    failure: list[BaseException] = []

    def emit(uid: RawUid | ReaderOpened) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, uid)

    def body() -> None:
        try:
            loop_body(emit, stopping)
        except BaseException as error:  # handed to the loop, raised there
            failure.append(error)
        finally:
            # The loop may already be closed when the daemon is going down.
            if not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    thread = threading.Thread(target=body, name=f"reader-{name}", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            assert isinstance(item, bytes | str | ReaderOpened)
            yield item
    finally:
        stopping.set()
        await asyncio.to_thread(thread.join, 5.0)
    if failure:
        error = failure[0]
        if isinstance(error, ReaderError):
            raise error
        raise ReaderError(f"{type(error).__name__}: {error}") from error
