"""Keeping a reader running: open it, turn its reads into CardTaps, drop a card held on
the reader, and when the device goes away say so and reopen it with back-off."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from contract.runtime import FIRST_RETRY_SECONDS, LONGEST_RETRY_SECONDS, Backoff
from edge.readers.taps import CardReader, CardTap, ReaderError, ReaderOpened
from edge.readers.uid import ByteOrder, UidError, UidFormat, normalize_uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UidRules:
    """How this reader's UIDs become canonical (see edge.readers.uid)."""

    uid_format: UidFormat = "hex"
    byte_order: ByteOrder = "as-read"
    decimal_bytes: int = 4


class Debouncer:
    """Counts a card once while it stays on the reader: a read of the same UID within
    `window` seconds of its previous read is a repeat (and extends the window)."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self.last_read: dict[str, float] = {}

    def is_new_tap(self, uid: str) -> bool:
        now = self.clock()
        previous = self.last_read.get(uid)
        self.last_read[uid] = now
        if len(self.last_read) > 256:
            self._forget_before(now - self.window)
        return previous is None or now - previous > self.window

    def _forget_before(self, moment: float) -> None:
        self.last_read = {uid: at for uid, at in self.last_read.items() if at >= moment}


ReaderStatusCallback = Callable[[str, bool, str], None]


async def supervise_reader(
    reader_id: str,
    reader: CardReader,
    on_tap: Callable[[CardTap], Awaitable[None]],
    *,
    rules: UidRules = UidRules(),
    debounce_seconds: float = 2.0,
    on_status: ReaderStatusCallback | None = None,
    first_retry: float = FIRST_RETRY_SECONDS,
    longest_retry: float = LONGEST_RETRY_SECONDS,
) -> None:
    """Run `reader` until cancelled. Each new tap is handed to `on_tap` (awaited: the
    driver keeps reading into its buffer meanwhile). `on_status(reader_id, online,
    reason)` hears when the reader comes and goes."""
    debouncer = Debouncer(debounce_seconds)
    backoff = Backoff(first_retry, longest_retry)
    online: bool | None = None  # unknown until the first open succeeds or fails

    def report(now_online: bool, reason: str) -> None:
        nonlocal online
        if now_online == online:
            return  # only changes are news
        online = now_online
        if on_status is not None:
            on_status(reader_id, now_online, reason)

    while True:
        try:
            async for raw in reader.read():
                if isinstance(raw, ReaderOpened):
                    log.info("reader %s open: %s", reader_id, reader.describe())
                    report(True, "open")
                    backoff.succeeded()
                    continue
                try:
                    uid = normalize_uid(
                        raw,
                        uid_format=rules.uid_format,
                        byte_order=rules.byte_order,
                        decimal_bytes=rules.decimal_bytes,
                    )
                except UidError as error:
                    log.warning("reader %s sent %r, not a card UID: %s", reader_id, raw, error)
                    continue
                if debouncer.is_new_tap(uid):
                    await on_tap(CardTap(reader_id, uid, datetime.now(UTC)))
            reason = "the driver stopped reading"
        except ReaderError as error:
            reason = str(error)
        log.warning(
            "reader %s (%s) unavailable: %s; trying again in %.0f s",
            reader_id,
            reader.describe(),
            reason,
            backoff.seconds,
        )
        report(False, reason)
        await asyncio.sleep(backoff.failed())
