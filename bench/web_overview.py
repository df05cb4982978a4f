"""The fleet overview of a large fleet: 1,000 edges with 20,000 chargers (40,000
connectors) in the store, the page rendered through the real ASGI app and timed on the
server side (from the request's arrival to its answer's last byte), beside its limit, in
four cases: nothing changed since the last load; 20 edges changed before each load (their
status stored, as ingest does); every edge changed before each load (what a replica that
kept nothing reads); a later page of the sites. Also timed: one push of the live overview
(its fragments, rendered for a stream).

    python -m bench.web_overview [--edges 1000] [--chargers 20] [--requests 60]
                                 [--store-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, insert, select, text, update
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.api import create_cloud_api, protect_cloud_api
from cloud.app import settle_start_up_objects
from cloud.settings import CloudSettings
from cloud.store import fleets, users
from cloud.store.database import open_store
from cloud.store.ingest import record_status
from cloud.store.schema import chargers, connectors, edges, metadata, rejections
from cloud.web.app import create_web_context
from cloud.web.pages import overview_fragments
from cloud.web.passwords import hash_password

LIMIT_MS = 300.0
PASSWORD = "bench password, long enough"
STATUSES = ["Available"] * 6 + ["Charging"] * 3 + ["Preparing", "Finishing", "Faulted"]


def seed(engine: Engine, edge_count: int, chargers_per_edge: int) -> int:
    """The fleet, its edges (a tenth offline, some behind, some refusing), chargers with two
    connectors each; a second fleet as large beside it, which the page must not read."""
    random.seed(12)
    now = datetime.now(UTC)
    fleet_ids = [fleets.add_fleet(engine, name).fleet_id for name in ("Bench", "Neighbour")]
    with engine.begin() as connection:
        for fleet_id in fleet_ids:
            edge_rows, charger_rows, connector_rows, refusal_rows = [], [], [], []
            for number in range(edge_count):
                edge_id = f"f{fleet_id}-site-{number:04d}"
                online = random.random() > 0.1
                backlog = 0 if random.random() > 0.05 else random.randrange(1, 5000)
                seen = now - timedelta(seconds=random.randrange(1, 600))
                status = {"state": "online" if online else "offline", "uptime_s": 86400.0}
                status |= {"disk_free_mb": float(random.randrange(200, 30000))}
                edge_rows.append(
                    {
                        "id": edge_id,
                        "fleet_id": fleet_id,
                        "site_name": f"Site {number}",
                        "location": f"Street {number}, Town",
                        "state": status["state"],
                        "status": status,
                        "status_at": seen,
                        "last_seen_at": seen,
                        "last_event_at": seen,
                        "backlog": backlog,
                        "oldest_age_s": float(random.randrange(1, 3600)) if backlog else None,
                        "figures_at": seen,
                        "software_version": "1.4.2",
                        "created_at": now,
                        "last_seq": random.randrange(10**6),
                        "quarantined_events": random.choice([0] * 30 + [2]),
                    }
                )
                edge_row = edge_rows[-1]
                if random.random() < 0.03:
                    refusal_rows.append(
                        {
                            "source": edge_id,
                            "reason": "invalid",
                            "count": 3,
                            "first_at": now,
                            "last_at": now,
                            "sample": "{}",
                        }
                    )
                counts: dict[str, int] = {}
                disconnected = 0
                for charger in range(chargers_per_edge):
                    charger_id = f"CP-{charger:03d}"
                    connected = random.random() > 0.01
                    disconnected += not connected
                    charger_rows.append(
                        {
                            "edge_id": edge_id,
                            "charger_id": charger_id,
                            "vendor": "ACME",
                            "model": "AC22",
                            "firmware_version": "3.1",
                            "connected": connected,
                            "updated_at": seen,
                        }
                    )
                    for connector in (1, 2):
                        status_text = random.choice(STATUSES)
                        counts[status_text] = counts.get(status_text, 0) + 1
                        connector_rows.append(
                            {
                                "edge_id": edge_id,
                                "charger_id": charger_id,
                                "connector_id": connector,
                                "status": status_text,
                                "error_code": "GroundFailure"
                                if status_text == "Faulted"
                                else "NoError",
                                "status_at": seen,
                            }
                        )
                # The counts ingest keeps on each edge's row (refresh_charger_counts).
                edge_row |= {
                    "chargers_total": chargers_per_edge,
                    "chargers_disconnected": disconnected,
                    "connectors_faulted": counts.get("Faulted", 0),
                    "connector_counts": dict(sorted(counts.items())),
                }
            connection.execute(insert(edges), edge_rows)
            connection.execute(insert(chargers), charger_rows)
            connection.execute(insert(connectors), connector_rows)
            if refusal_rows:
                connection.execute(insert(rejections), refusal_rows)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    users.add_user(engine, "bench@example.org", hash_password(PASSWORD), "viewer", fleet_ids[0])
    return fleet_ids[0]


class ServerClock:
    """ASGI middleware: the time from each request's arrival to its answer's last byte,
    on the wall clock and in CPU time of the whole process (one request at a time: its
    own). On a machine shared with other work the wall time grows, the CPU time does not."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.times: dict[str, list[float]] = {}
        self.cpu_times: dict[str, list[float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, cpu_started = time.perf_counter(), time.process_time()

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                elapsed = (time.perf_counter() - started) * 1000
                self.times.setdefault(scope["path"], []).append(elapsed)
                cpu = (time.process_time() - cpu_started) * 1000
                self.cpu_times.setdefault(scope["path"], []).append(cpu)

        await self.app(scope, receive, timed_send)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# Edges whose status is stored again before each load, in the "some changed" case.
CHANGED_PER_LOAD = 20
# The page of the sites timed in the "later page" case.
LATER_PAGE = 5
Results = dict[str, list[float]]
CASES = {
    "quiet": "overview, nothing changed",
    "some": f"overview, {CHANGED_PER_LOAD} edges changed",
    "all": "overview, every edge changed",
    "later": f"overview, page {LATER_PAGE}",
}


async def measure(engine: Engine, fleet_id: int, requests: int) -> tuple[Results, Results, int]:
    """Wall and CPU times (ms) per case, and the first page's size in bytes."""
    settings = CloudSettings(api={"token": "bench"})
    api = create_cloud_api(settings, engine, Ed25519PrivateKey.generate())
    clock = ServerClock(protect_cloud_api(api, settings.api, settings.firmware.max_image_bytes))
    settle_start_up_objects()  # as run_cloud does once the API is up
    transport = httpx.ASGITransport(app=clock)
    states = edge_states(engine, fleet_id)
    walls: Results = {}
    cpus: Results = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        form = await client.get("/web/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        answer = await client.post(
            "/web/login",
            data={"email": "bench@example.org", "password": PASSWORD, "csrf_token": token[1]},
        )
        assert answer.status_code == 303, answer.text
        size = 0
        for _ in range(3):  # warm-up: templates compiled, connections pooled
            page = await client.get("/web/")
            assert page.status_code == 200
            size = len(page.content)
        for case in CASES:
            clock.times.clear()
            clock.cpu_times.clear()
            path = f"/web/?page={LATER_PAGE}" if case == "later" else "/web/"
            for _ in range(requests):
                if case == "some":
                    for edge_id in random.sample(sorted(states), CHANGED_PER_LOAD):
                        store_status(engine, edge_id, states[edge_id])
                elif case == "all":
                    move_every_revision(engine, fleet_id)
                page = await client.get(path)
                assert page.status_code == 200
            walls[case] = clock.times["/web/"]
            cpus[case] = clock.cpu_times["/web/"]
    return walls, cpus, size


def edge_states(engine: Engine, fleet_id: int) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(edges.c.id, edges.c.state).where(edges.c.fleet_id == fleet_id)
        ).all()
    return {edge_id: state for edge_id, state in rows}


def store_status(engine: Engine, edge_id: str, state: str) -> None:
    """The edge's status, stored as ingest stores it (its change marker moves), its
    presence as it was."""
    document = {"state": state, "backlog": 0, "uptime_s": 90000.0, "disk_free_mb": 8000.0}
    assert record_status(engine, edge_id, json.dumps(document).encode())


def move_every_revision(engine: Engine, fleet_id: int) -> None:
    """Every edge of the fleet changed, as far as a kept summary can tell."""
    with engine.begin() as connection:
        connection.execute(
            update(edges).where(edges.c.fleet_id == fleet_id).values(revision=edges.c.revision + 1)
        )


def _time_live_push(settings: CloudSettings, engine: Engine, times: int) -> list[float]:
    """One push of the live overview: its fragments, from the store to HTML."""
    context = create_web_context(settings.web, engine)
    user = users.list_users(engine)[0]
    elapsed = []
    for _ in range(times + 1):
        started = time.perf_counter()
        overview_fragments(context, user)
        elapsed.append((time.perf_counter() - started) * 1000)
    return elapsed[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description="Server time of the fleet overview page.")
    parser.add_argument("--edges", type=int, default=1000, help="edges in the fleet")
    parser.add_argument("--chargers", type=int, default=20, help="chargers per edge")
    parser.add_argument("--requests", type=int, default=60, help="timed page loads")
    parser.add_argument("--store-url", help="an empty PostgreSQL database (default: SQLite)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = options.store_url or f"sqlite:///{Path(directory) / 'cloud.db'}"
        engine = open_store(url)
        if engine.dialect.name == "postgresql":
            names = ", ".join(table.name for table in metadata.sorted_tables)
            with engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
                connection.execute(
                    text("INSERT INTO fleets (id, name, created_at) VALUES (1, 'default', now())")
                )
                connection.execute(text("SELECT setval(pg_get_serial_sequence('fleets', 'id'), 1)"))
        started = time.perf_counter()
        fleet_id = seed(engine, options.edges, options.chargers)
        seeded = time.perf_counter() - started
        walls, cpus, size = asyncio.run(measure(engine, fleet_id, options.requests))
        settings = CloudSettings(api={"token": "bench"})
        live_times = _time_live_push(settings, engine, options.requests // 3 or 1)
        engine.dispose()
    chargers_total = options.edges * options.chargers
    print(
        f"\nstore: {engine.dialect.name}; fleet of {options.edges:,} edges, {chargers_total:,} "
        f"chargers, {2 * chargers_total:,} connectors (and a second fleet as large); "
        f"seeded in {seeded:.1f} s"
    )
    print(f"first page: {size / 1024:.0f} KiB of HTML; {options.requests} timed loads a case\n")
    print(f"{'server time, ms':<38} {'p50':>8} {'p99':>8} {'limit':>8}   {'CPU p50':>8} {'p99':>8}")
    worst = 0.0
    for case, label in CASES.items():
        p50, p99 = percentile(walls[case], 0.5), percentile(walls[case], 0.99)
        cpu50, cpu99 = percentile(cpus[case], 0.5), percentile(cpus[case], 0.99)
        worst = max(worst, p99)
        print(f"{label:<38} {p50:>8.1f} {p99:>8.1f} {LIMIT_MS:>8.0f}   {cpu50:>8.1f} {cpu99:>8.1f}")
    live50, live99 = percentile(live_times, 0.5), percentile(live_times, 0.99)
    print(f"{'one live push of the overview':<38} {live50:>8.1f} {live99:>8.1f} {LIMIT_MS:>8.0f}")
    everything = [value for values in walls.values() for value in values]
    print(f"mean {statistics.mean(everything):.1f} ms, max {max(everything):.1f} ms")
    print(f"load average while measured: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0 if max(worst, live99) < LIMIT_MS else 1


if __name__ == "__main__":
    sys.exit(main())
