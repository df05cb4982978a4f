"""The single writer: results after commit, a failing unit rolls back alone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from edge.store.database import StoreError
from edge.store.writer import StoreWriter


def insert_charger(charger_id: str):  # type: ignore[no-untyped-def]
    def work(db: Database) -> str:
        db.conn.execute("INSERT INTO chargers (id, created_at) VALUES (?, 'x')", [charger_id])
        return charger_id

    return work


def insert_then_fail(db: Database) -> None:
    db.conn.execute("INSERT INTO chargers (id, created_at) VALUES ('HALF', 'x')")
    raise ValueError("second half of the unit failed")


def stored_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM chargers ORDER BY id")]


async def test_failing_unit_leaves_nothing_and_others_in_its_batch_commit(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    async with StoreWriter(path) as store:
        # Queued without awaiting in between: they share one batch.
        first = store.run(insert_charger("A"))
        broken = store.run(insert_then_fail)
        last = store.run(insert_charger("B"))
        assert await first == "A"
        with pytest.raises(ValueError, match="second half"):
            await broken
        assert await last == "B"
        # Committed before the futures resolved: another connection sees it now.
        assert stored_ids(path) == ["A", "B"]
        assert store.commits == 1


async def test_submitted_and_buffered_work_is_committed_before_a_later_run(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    async with StoreWriter(path) as store:
        store.submit(insert_charger("S"))
        store.insert_later("INSERT INTO chargers (id, created_at) VALUES (?, ?)", ("L", "x"))
        await store.run(insert_charger("R"))
        assert stored_ids(path) == ["L", "R", "S"]


async def test_close_flushes_and_then_refuses_work(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    store = StoreWriter(path)
    await store.__aenter__()
    store.submit(insert_charger("LAST"))
    await store.close()
    assert stored_ids(path) == ["LAST"]
    with pytest.raises(StoreError, match="closed"):
        store.run(insert_charger("LATE"))


async def test_work_queued_during_a_commit_forms_the_next_batch(tmp_path: Path) -> None:
    async with StoreWriter(tmp_path / "edge.db") as store:
        results = await asyncio.gather(*(store.run(insert_charger(f"C{n}")) for n in range(100)))
        assert len(results) == 100
        assert store.commits < 100


async def test_a_buffered_row_that_cannot_be_stored_fails_nothing_else(tmp_path: Path) -> None:
    """Text SQLite cannot take (a lone surrogate) or a number beyond its range, among
    buffered rows: that row alone is dropped and counted; the rest of the batch, and
    every unit of work in it, is committed."""
    path = tmp_path / "edge.db"
    sql = "INSERT INTO chargers (id, created_at) VALUES (?, ?)"
    async with StoreWriter(path) as store:
        store.insert_later(sql, ("L1", "x"))
        store.insert_later(sql, ("\ud800", "x"))
        store.insert_later(sql, ("L2", 2**70))
        store.insert_later(sql, ("L3", "x"))
        assert await store.run(insert_charger("R")) == "R"
        assert stored_ids(path) == ["L1", "L3", "R"]
        assert store.rows_dropped == 2
