"""The store's single writer: one thread, one connection, group commit.

Every piece of work is a plain function over the database. The event loop hands
it to the writer thread, which runs everything queued at that moment inside one
SQLite transaction, each piece in its own savepoint (a failing piece rolls back
alone and nothing of it stays half-written), commits once, then resolves every
caller's future. While one commit is syncing to disk the next batch gathers, so
the cost of an fsync is shared by everyone who asked in that window, and an
answer is never given before its data is on disk.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import sqlite_utils

from edge.store.database import StoreError, open_database

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[sqlite_utils.Database], Any]

# Upper bound on one transaction, so a huge backlog still commits in steps.
MAX_BATCH = 2000


@dataclass(slots=True)
class _Item:
    work: Work
    future: asyncio.Future[Any] | None


_STOP = _Item(work=lambda db: None, future=None)


class StoreWriter:
    """`async with StoreWriter(path) as store:` then `await store.run(fn)`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self.items_committed = 0

    async def __aenter__(self) -> StoreWriter:
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(opened,), name="store-writer", daemon=True
        )
        self._thread.start()
        await opened
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        thread, self._thread = self._thread, None
        await asyncio.to_thread(thread.join)

    def run(self, work: Callable[[sqlite_utils.Database], T]) -> asyncio.Future[T]:
        """Run `work(db)` in the writer; the future resolves after its commit."""
        if self._thread is None or self._loop is None:
            raise StoreError("the store is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Item(work, future))
        return future

    def submit(self, work: Work) -> None:
        """Queue `work(db)` without waiting: for records nobody is answered about."""
        if self._thread is None:
            raise StoreError("the store is closed")
        self._queue.put(_Item(work, None))

    def _main(self, opened: asyncio.Future[None]) -> None:
        assert self._loop is not None
        loop = self._loop
        try:
            db = open_database(self.path)
        except Exception as error:
            loop.call_soon_threadsafe(_settle, opened, None, error)
            return
        loop.call_soon_threadsafe(_settle, opened, None, None)
        try:
            self._serve(db, loop)
        finally:
            db.conn.close()

    def _serve(self, db: sqlite_utils.Database, loop: asyncio.AbstractEventLoop) -> None:
        connection = db.conn
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            outcomes: list[tuple[asyncio.Future[Any] | None, Any, BaseException | None]] = []
            try:
                connection.execute("BEGIN IMMEDIATE")
                for item in batch:
                    if item is _STOP:
                        stopping = True
                        continue
                    outcomes.append(_run_in_savepoint(db, item))
                connection.execute("COMMIT")
            except Exception as error:
                log.exception("store commit failed; %d pieces of work lost", len(batch))
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                outcomes = [(item.future, None, error) for item in batch if item is not _STOP]
            self.commits += 1
            self.items_committed += len(outcomes)
            waiting = [outcome for outcome in outcomes if outcome[0] is not None]
            if waiting:
                loop.call_soon_threadsafe(_settle_all, waiting)


def _run_in_savepoint(
    db: sqlite_utils.Database, item: _Item
) -> tuple[asyncio.Future[Any] | None, Any, BaseException | None]:
    connection = db.conn
    connection.execute("SAVEPOINT work")
    try:
        result = item.work(db)
    except Exception as error:
        connection.execute("ROLLBACK TO work")
        connection.execute("RELEASE work")
        if item.future is None:
            log.exception("background store work failed")
        return item.future, None, error
    connection.execute("RELEASE work")
    return item.future, result, None


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(
    outcomes: list[tuple[asyncio.Future[Any] | None, Any, BaseException | None]],
) -> None:
    for future, result, error in outcomes:
        if future is not None:
            _settle(future, result, error)
