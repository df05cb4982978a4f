"""What one look of the alerts engine costs on a large fleet: 1,000 edges with 20 chargers
of 2 connectors each (40,000 connectors), some edges offline or behind, some connectors
Faulted, refusals from some edges.

Each replica looks every `[alerts] interval` (15 s): a look reads the store in one
snapshot (edges, Faulted connectors, refusals in the window, open alerts) and judges it;
it writes only when an alert is raised or cleared. Timed: the first look (which raises
every alert, one transaction) and then steady looks (nothing changes: reads and the
judgement only), p50 and p99, beside the limit.

    python -m bench.alerts_look [--edges 1000] [--store-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, text

from cloud.alerts import AlertsEngine
from cloud.settings import AlertSettings
from cloud.store.alerts import bucket_of
from cloud.store.database import open_store
from cloud.store.schema import chargers, connectors, edges, metadata, refusal_counts
from cloud.store.times import utc_now

# A look every 15 s (the default interval) that takes under a second leaves the
# replica's threads to ingest.
STEADY_LIMIT_MS = 1000.0
CHARGERS_PER_EDGE = 20
CONNECTORS_PER_CHARGER = 2


def seed(engine: Engine, edge_count: int) -> dict[str, int]:
    """The fleet; how many of each condition it holds."""
    now = utc_now()
    edge_rows: list[dict[str, Any]] = []
    charger_rows: list[dict[str, Any]] = []
    connector_rows: list[dict[str, Any]] = []
    faulted = offline = behind = 0
    for number in range(edge_count):
        edge_id = f"site-{number:04d}"
        state = "offline" if number % 20 == 0 else "online"
        offline += state == "offline"
        backlog = 500 if number % 25 == 1 else 0
        behind += backlog > 0
        edge_rows.append(
            {
                "id": edge_id,
                "state": state,
                "state_since": now - timedelta(hours=2),
                "status": {"state": state, "at": now.isoformat(), "backlog": backlog},
                "status_at": now,
                "backlog": backlog,
                "oldest_age_s": 7200.0 if backlog else None,
                "figures_at": now,
                "last_event_at": now - timedelta(minutes=1),
                "created_at": now - timedelta(days=30),
            }
        )
        for charger in range(CHARGERS_PER_EDGE):
            charger_id = f"CP-{charger:02d}"
            charger_rows.append(
                {
                    "edge_id": edge_id,
                    "charger_id": charger_id,
                    "booted_at": now - timedelta(days=1),
                    "updated_at": now,
                }
            )
            for connector in range(1, CONNECTORS_PER_CHARGER + 1):
                is_faulted = (number * CHARGERS_PER_EDGE + charger) % 97 == connector
                faulted += is_faulted
                connector_rows.append(
                    {
                        "edge_id": edge_id,
                        "charger_id": charger_id,
                        "connector_id": connector,
                        "status": "Faulted" if is_faulted else "Available",
                        "error_code": "GroundFailure" if is_faulted else "NoError",
                        "status_at": now - timedelta(hours=1),
                    }
                )
    spiking = [f"site-{number:04d}" for number in range(0, edge_count, 50)]
    bucket_rows = [
        {"bucket": bucket_of(now - timedelta(seconds=seconds)), "source": source, "count": 30}
        for source in spiking
        for seconds in range(0, 600, 60)
    ]
    with engine.begin() as connection:
        for table, rows in (
            (edges, edge_rows),
            (chargers, charger_rows),
            (connectors, connector_rows),
            (refusal_counts, bucket_rows),
        ):
            for start in range(0, len(rows), 5000):
                connection.execute(insert(table), rows[start : start + 5000])
    return {
        "edges": edge_count,
        "connectors": len(connector_rows),
        "offline": offline,
        "behind": behind,
        "faulted": faulted,
        "spiking": len(spiking),
    }


async def measure(engine: Engine, looks: int) -> tuple[float, int, list[float]]:
    settings = AlertSettings(max_open_per_edge=1000)
    alerts = AlertsEngine(settings, engine)
    started = time.perf_counter()
    raised, _ = await alerts.look()
    first = time.perf_counter() - started
    steady = []
    for _ in range(looks):
        started = time.perf_counter()
        again, cleared = await alerts.look()
        steady.append(time.perf_counter() - started)
        assert not again and not cleared, "a steady look changed something"
    return first, len(raised), steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=1000)
    parser.add_argument("--looks", type=int, default=30)
    parser.add_argument("--store-url", default="", help="PostgreSQL (emptied first)")
    arguments = parser.parse_args()
    logging.getLogger("cloud.alerts").setLevel(logging.ERROR)  # the first look's 500 lines
    with tempfile.TemporaryDirectory() as directory:
        url = arguments.store_url or f"sqlite:///{Path(directory) / 'cloud.db'}"
        engine = open_store(url)
        if arguments.store_url:
            names = ", ".join(table.name for table in metadata.sorted_tables)
            with engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        fleet = seed(engine, arguments.edges)
        first, raised, steady = asyncio.run(measure(engine, arguments.looks))
        engine.dispose()
    milliseconds = sorted(seconds * 1000 for seconds in steady)
    p50 = statistics.median(milliseconds)
    p99 = milliseconds[min(len(milliseconds) - 1, round(0.99 * (len(milliseconds) - 1)))]
    print(f"store: {engine.dialect.name}; fleet: {fleet}")
    print(f"first look: {first * 1000:.0f} ms, {raised} alerts raised")
    print(f"steady look: p50 {p50:.1f} ms, p99 {p99:.1f} ms (limit {STEADY_LIMIT_MS:.0f} ms)")


if __name__ == "__main__":
    main()
