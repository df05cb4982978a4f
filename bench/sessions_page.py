"""Paging through a million sessions: the first page and pages deep in the set, through
the REST API in process (ASGI, no network), whole fleet and filtered by site, card and
account. A keyset cursor should make a deep page cost what the first does; a page by
OFFSET (what the cursor replaces) is timed beside it for comparison.

The store is filled by bulk inserts (1,000 sites, 20,000 chargers, 2,000 cards in 100
accounts, sessions over two years), not through ingest: this measures reading.

    python -m bench.sessions_page [--sessions 1000000] [--store-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, insert, select, text

from cloud.api import create_cloud_api, protect_cloud_api
from cloud.settings import CloudSettings
from cloud.store.database import open_store, reading
from cloud.store.schema import (
    DEFAULT_FLEET_ID,
    chargers,
    edges,
    metadata,
    tariffs,
    transactions,
)
from cloud.store.sessions import Cursor, SessionFilter
from cloud.store.tariffs import TariffSpec, create_tariff, reprice_all, update_tariff
from cloud.tariffs import Band

# A page of 50 sessions, the API's default, whatever its depth.
TARGET_MS = 100.0
# A deep page may take at most this many times the first one's p50.
TARGET_GROWTH = 2.0
TOKEN = "bench"
WARM_UP = 5  # requests before the timed ones (the first fills caches)
EDGES, CHARGERS_PER_EDGE, CARDS, ACCOUNTS = 1000, 20, 2000, 100
FIRST_SESSION = datetime(2025, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=730)


def seed(engine: Engine, count: int) -> float:
    """Fill the store with `count` stopped, priced sessions; the seconds it took."""
    began = time.perf_counter()
    random.seed(12)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(edges),
            [{"id": f"site-{n:04d}", "created_at": now, "state": "online"} for n in range(EDGES)],
        )
        connection.execute(
            insert(chargers),
            [
                {"edge_id": f"site-{n:04d}", "charger_id": f"CP-{c:02d}", "updated_at": now}
                for n in range(EDGES)
                for c in range(CHARGERS_PER_EDGE)
            ],
        )
        tariff = connection.execute(
            insert(tariffs).values(
                name="standard",
                currency="EUR",
                minor_unit_digits=2,
                time_zone="UTC",
                valid_from=FIRST_SESSION - timedelta(days=1),
                price=300_000,
                bands=[],
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key
        assert tariff is not None
        for rows in _chunks(_sessions(count, int(tariff[0])), 20_000):
            connection.execute(insert(transactions), rows)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("ANALYZE " + ", ".join(table.name for table in metadata.sorted_tables))
            )
    return time.perf_counter() - began


def _sessions(count: int, tariff_id: int) -> Iterator[dict[str, Any]]:
    step = SPAN / count
    for number in range(count):
        edge = random.randrange(EDGES)
        card = random.randrange(CARDS)
        start = FIRST_SESSION + step * number + timedelta(seconds=random.randrange(60))
        minutes = random.randrange(20, 600)
        energy = random.randrange(1000, 60_000)
        yield {
            "edge_id": f"site-{edge:04d}",
            "transaction_id": number + 1,
            "charger_id": f"CP-{random.randrange(CHARGERS_PER_EDGE):02d}",
            "connector_id": 1,
            "id_tag": f"CARD-{card:05d}",
            "id_tag_status": "Accepted",
            "account": f"ACCOUNT-{card % ACCOUNTS:03d}",
            "meter_start_wh": 0,
            "meter_stop_wh": energy,
            "energy_wh": energy,
            "power_w": None,
            "started_at": start,
            "stopped_at": start + timedelta(minutes=minutes),
            "stop_reason": "Local",
            "updated_at": start + timedelta(minutes=minutes),
            "session_at": start,
            "synced_at": start + timedelta(minutes=minutes, seconds=1),
            "sync_delay_s": 1.0,
            "cost_minor": energy * 3 // 100,
            "tariff_id": tariff_id,
            "fleet_id": DEFAULT_FLEET_ID,
        }


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def cursor_at(engine: Engine, query: SessionFilter, depth: int) -> Cursor | None:
    """The cursor that starts a page `depth` sessions into `query`'s list (found once by
    OFFSET, outside the timing)."""
    if depth == 0:
        return None
    t = transactions.c
    statement = select(t.session_at, t.edge_id, t.transaction_id)
    for column, value in (
        (t.edge_id, query.edge_id),
        (t.id_tag, query.id_tag),
        (t.account, query.account),
    ):
        if value is not None:
            statement = statement.where(column == value)
    statement = statement.order_by(
        t.session_at.desc(), t.edge_id.desc(), t.transaction_id.desc()
    ).offset(depth - 1)
    with reading(engine) as connection:
        row = connection.execute(statement.limit(1)).one()
    return Cursor(row.session_at, row.edge_id, int(row.transaction_id))


def count_of(engine: Engine, query: SessionFilter) -> int:
    t = transactions.c
    statement = select(text("count(*)")).select_from(transactions)
    for column, value in (
        (t.edge_id, query.edge_id),
        (t.id_tag, query.id_tag),
        (t.account, query.account),
    ):
        if value is not None:
            statement = statement.where(column == value)
    with reading(engine) as connection:
        return int(connection.execute(statement).scalar_one())


async def time_pages(
    client: httpx.AsyncClient, pages: list[dict[str, str]], repeats: int
) -> list[list[float]]:
    """Milliseconds of each request for each page, the pages asked in turn in each round
    (so that a busy machine slows them alike)."""
    for params in pages:
        for _ in range(WARM_UP):
            await client.get("/api/sessions", params=params)
    times: list[list[float]] = [[] for _ in pages]
    for _ in range(repeats):
        for index, params in enumerate(pages):
            began = time.perf_counter()
            answer = await client.get("/api/sessions", params=params)
            times[index].append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["sessions"]) > 0
    return times


def offset_page_ms(engine: Engine, query: SessionFilter, depth: int, repeats: int) -> list[float]:
    """The same page by LIMIT/OFFSET, in the store only (what the cursor replaces)."""
    t = transactions.c
    statement = select(transactions)
    for column, value in (
        (t.edge_id, query.edge_id),
        (t.id_tag, query.id_tag),
        (t.account, query.account),
    ):
        if value is not None:
            statement = statement.where(column == value)
    statement = (
        statement.order_by(t.session_at.desc(), t.edge_id.desc(), t.transaction_id.desc())
        .offset(depth)
        .limit(50)
    )
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        with reading(engine) as connection:
            connection.execute(statement).all()
        times.append((time.perf_counter() - began) * 1000)
    return times


async def measure(engine: Engine, repeats: int, offset_repeats: int) -> bool:
    settings = CloudSettings(api={"token": TOKEN})
    app = protect_cloud_api(
        create_cloud_api(settings, engine, Ed25519PrivateKey.generate()),
        settings.api,
        settings.firmware.max_image_bytes,
    )
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    busiest_edge = "site-0007"
    filters = {
        "whole fleet": SessionFilter(),
        "one site": SessionFilter(edge_id=busiest_edge),
        "one account": SessionFilter(account="ACCOUNT-042"),
        "one card": SessionFilter(id_tag="CARD-00042"),
    }
    names = {"edge_id": "edge", "id_tag": "card", "account": "account"}
    print(f"{'':<34} {'p50 ms':>8} {'p99 ms':>8} {'OFFSET p50':>11}   target")
    ok = True
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://127.0.0.1:8090",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        for label, query in filters.items():
            total = await asyncio.to_thread(count_of, engine, query)
            base = {
                names[key]: value
                for key, value in vars(query).items()
                if value is not None and key in names
            }
            depths = sorted({0, total // 2, max(total - 50, 0)})
            pages = []
            for depth in depths:
                cursor = await asyncio.to_thread(cursor_at, engine, query, depth)
                pages.append(base | {"limit": "50"} | ({"cursor": cursor.text()} if cursor else {}))
            timed = await time_pages(client, pages, repeats)
            first_p50 = statistics.median(timed[0])
            for depth, times in zip(depths, timed, strict=True):
                p50, p99 = statistics.median(times), _p99(times)
                offsets = await asyncio.to_thread(
                    offset_page_ms, engine, query, depth, offset_repeats
                )
                if depth == 0:
                    target = f"p99 < {TARGET_MS:.0f} ms"
                    met = p99 < TARGET_MS
                else:
                    target = f"p50 <= {TARGET_GROWTH:.0f} x first"
                    met = p99 < TARGET_MS and p50 <= TARGET_GROWTH * first_p50
                ok &= met
                where = "first page" if depth == 0 else f"at {depth:,}"
                print(
                    f"{label + ' (' + f'{total:,}' + '), ' + where:<34} {p50:>8.1f} {p99:>8.1f} "
                    f"{statistics.median(offsets):>11.1f}   {target}{'' if met else '  MISSED'}"
                )
        # The CSV of one account's sessions, streamed.
        began = time.perf_counter()
        export = await client.get("/api/sessions.csv", params={"account": "ACCOUNT-042"})
        took = time.perf_counter() - began
        rows = export.text.count("\n") - 1
        print(f"\nCSV of one account: {rows:,} rows in {took:.2f} s ({rows / took:,.0f} rows/s)")
    return ok


def time_repricing(engine: Engine) -> None:
    """A fleet tariff back-dated over every session: the change itself, then the time to
    price them all again in the background's batches, with a flat price, then with time
    bands (bench/repricing.py measures ingest meanwhile)."""
    flat = TariffSpec(
        name="back-dated",
        currency="EUR",
        valid_from=FIRST_SESSION - timedelta(hours=1),
        price=310_000,
    )
    began = time.perf_counter()
    change = create_tariff(engine, flat)
    changed = time.perf_counter() - began
    began = time.perf_counter()
    repriced = reprice_all(engine)
    took = time.perf_counter() - began
    print(
        f"re-pricing, flat price: change {changed * 1000:.0f} ms, "
        f"{repriced:,} sessions in {took:.1f} s"
    )
    assert change.tariff is not None
    night = Band(frozenset(range(7)), 22 * 60, 6 * 60, 200_000)
    banded = replace(flat, bands=(night,), time_zone="Europe/Berlin")
    began = time.perf_counter()
    update_tariff(engine, change.tariff.id, banded)
    changed = time.perf_counter() - began
    began = time.perf_counter()
    repriced = reprice_all(engine)
    took = time.perf_counter() - began
    print(
        f"re-pricing, time bands: change {changed * 1000:.0f} ms, "
        f"{repriced:,} sessions in {took:.1f} s"
    )


def _p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description="Pages of sessions, first and deep.")
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--store-url", help="an empty store (default: SQLite, scratch)")
    parser.add_argument("--repeats", type=int, default=100, help="requests per page timed")
    parser.add_argument("--offset-repeats", type=int, default=5)
    parser.add_argument(
        "--no-reprice", dest="reprice", action="store_false", help="skip timing re-pricing"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = options.store_url or f"sqlite:///{Path(directory) / 'cloud.db'}"
        engine = open_store(url)
        try:
            seconds = seed(engine, options.sessions)
            name = engine.dialect.name
            print(f"{options.sessions:,} sessions seeded in {seconds:.1f} s ({name})", flush=True)
            ok = asyncio.run(measure(engine, options.repeats, options.offset_repeats))
            if options.reprice:
                time_repricing(engine)
        finally:
            engine.dispose()
    if not ok:
        print("MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
