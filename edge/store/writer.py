"""The store's single writer: one connection, one task, group commit.

Every piece of work is a plain function over the database. Work queued while the
previous batch is being committed forms the next batch: it runs inside one SQLite
transaction, each piece in its own savepoint (a failing piece rolls back alone and
nothing of it stays half-written), and is committed once; then every caller's
future resolves. An answer is therefore never given before its data is on disk,
and the cost of an fsync is shared by everyone who asked in that window.

The statements run on the event loop's thread: they take microseconds, and running
them there avoids handing Python's GIL back and forth with a writer thread at every
SQLite call (measured: that cost more than the SQL itself). Only COMMIT, which waits
for the disk (milliseconds on an SD card), goes to a thread, so the loop keeps
serving chargers meanwhile; new work gathers for the next batch.

The thread's COMMIT needs Python's GIL back to return, and the loop, busy with
chargers, holds it: by default CPython makes a waiting thread wait up to 5 ms before
the holder must let go, and every answer of the batch waited with it. The daemon
shortens that wait to `GIL_SWITCH_INTERVAL_S` (docs/performance.md: 0.32 -> 0.39 of
the echo server at 50 chargers).

Buffered rows (`insert_later`: the message log) are inserted with one executemany per
statement. No row may fail the batch it came with: if one cannot be inserted (text
that is not Unicode, a number beyond SQLite's range), the statement's rows are
inserted one by one and that row alone is dropped, logged and counted
(`rows_dropped`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import sqlite_utils

from edge.store.database import StoreError, open_database

log = logging.getLogger(__name__)

# sys.setswitchinterval for the daemon: how long the commit thread may wait for the GIL.
GIL_SWITCH_INTERVAL_S = 0.0005

T = TypeVar("T")
Work = Callable[[sqlite_utils.Database], Any]
_Pending = tuple[Work, "asyncio.Future[Any] | None"]


class StoreWriter:
    """`async with StoreWriter(path) as store:` then `await store.run(fn)`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: sqlite_utils.Database | None = None
        self._pending: list[_Pending] = []
        # SQL -> rows to insert with the next batch, for records nobody waits for.
        self._buffered: dict[str, list[tuple[Any, ...]]] = {}
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0
        self.units_committed = 0
        self.rows_dropped = 0

    async def __aenter__(self) -> StoreWriter:
        self._db = await asyncio.to_thread(open_database, self.path)
        self._flusher = asyncio.create_task(self._flush_forever(), name="store-writer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit what is queued, then close the connection."""
        if self._flusher is None or self._db is None:
            return
        self._closing = True
        self._wake.set()
        flusher, self._flusher = self._flusher, None
        await flusher
        self._db.conn.close()
        self._db = None

    def run(self, work: Callable[[sqlite_utils.Database], T]) -> asyncio.Future[T]:
        """Run `work(db)` in the next batch; the future resolves after its commit."""
        self._check_open()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future))
        self._wake.set()
        return future

    def submit(self, work: Work) -> None:
        """Queue `work(db)` without waiting: one statement nobody is answered about."""
        self._check_open()
        self._pending.append((work, None))
        self._wake.set()

    def insert_later(self, sql: str, row: tuple[Any, ...]) -> None:
        """Insert `row` with the next batch, not waiting: for logs, not for data."""
        self._check_open()
        self._buffered.setdefault(sql, []).append(row)
        self._wake.set()

    def _check_open(self) -> None:
        if self._flusher is None or self._closing:
            raise StoreError("the store is closed")

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending or self._buffered:
                # One turn of the loop first: frames already received join this batch.
                await asyncio.sleep(0)
                await self._commit_batch()
            if self._closing and not self._pending and not self._buffered:
                return

    async def _commit_batch(self) -> None:
        assert self._db is not None
        db, connection = self._db, self._db.conn
        outcomes: list[tuple[asyncio.Future[Any] | None, Any, BaseException | None]] = []
        batch: list[_Pending] = []
        try:
            # Only another process (the CLI adding a card) can hold the lock, briefly.
            connection.execute("BEGIN IMMEDIATE")
            batch, self._pending = self._pending, []
            buffered, self._buffered = self._buffered, {}
            for sql, rows in buffered.items():
                self._insert_rows(connection, sql, rows)
            outcomes = [_run_unit(db, work, future) for work, future in batch]
            await asyncio.to_thread(connection.execute, "COMMIT")
        except Exception as failure:  # a failed commit fails every caller
            log.exception("store commit failed")
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if not batch:
                batch, self._pending = self._pending, []
            outcomes = [(future, None, failure) for _, future in batch]
        self.commits += 1
        self.units_committed += len(outcomes)
        for future, result, error in outcomes:
            if future is None or future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def _insert_rows(self, connection: sqlite3.Connection, sql: str, rows: list[Any]) -> None:
        """All of `rows`, or, when one fails, every row but those that fail."""
        connection.execute("SAVEPOINT buffered")
        try:
            connection.executemany(sql, rows)
        except (sqlite3.Error, ValueError, OverflowError):  # one bad row: find it
            connection.execute("ROLLBACK TO buffered")
            for row in rows:
                try:
                    connection.execute(sql, row)
                except (sqlite3.Error, ValueError, OverflowError) as error:
                    self.rows_dropped += 1
                    log.error("a buffered row was dropped (%s): %.200r", error, row)
        connection.execute("RELEASE buffered")


def _run_unit(
    db: sqlite_utils.Database, work: Work, future: asyncio.Future[Any] | None
) -> tuple[asyncio.Future[Any] | None, Any, BaseException | None]:
    if future is None:
        # One statement: if it fails SQLite undoes that statement alone.
        try:
            work(db)
        except Exception as error:  # nobody waits; log and go on
            log.exception("background store work failed")
            return None, None, error
        return None, None, None
    connection = db.conn
    connection.execute("SAVEPOINT work")
    try:
        result = work(db)
    except Exception as error:  # returned to the caller that queued it
        connection.execute("ROLLBACK TO work")
        connection.execute("RELEASE work")
        return future, None, error
    connection.execute("RELEASE work")
    return future, result, None
