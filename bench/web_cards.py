"""The cards of a large fleet: 20 sites each holding the same 20,000 cards (400,000 site
entries), a second fleet as large beside it. Timed: the fleet's card list (first page
and one deep in the list, through the real ASGI app, server side), one card changed at
every site (20 new list versions of 20,000 cards), a CSV import of 5,000 lines previewed
and applied, and the CSV export of the whole list.

    python -m bench.web_cards [--sites 20] [--cards 20000] [--import-lines 5000]
                              [--store-url postgresql+psycopg://.../empty-database]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text

from bench.web_overview import PASSWORD, ServerClock, percentile
from cloud import card_csv
from cloud.api import create_cloud_api, protect_cloud_api
from cloud.settings import CloudSettings
from cloud.store import card_edits, desired, fleets, users
from cloud.store import cards as cards_store
from cloud.store.database import open_store
from cloud.web.card_import import import_changes
from cloud.web.passwords import hash_password
from contract.protocol import CardEntry

PAGE_LIMIT_MS = 300.0


def seed(engine: Engine, sites: int, cards: int) -> int:
    """Two fleets of `sites` sites, each site holding `cards` cards (by the API's path)."""
    fleet_ids = [fleets.add_fleet(engine, name).fleet_id for name in ("Bench", "Neighbour")]
    for fleet_id in fleet_ids:
        entries = [
            CardEntry(
                id_tag=f"{fleet_id:02d}{number:08X}",
                label=f"car {number}",
                parent_id_tag=f"ACC-{number % 50}",
            )
            for number in range(cards)
        ]
        for site in range(sites):
            edge_id = f"f{fleet_id}-site-{site:03d}"
            fleets.assign_edge(engine, edge_id, fleet_id, site_name=f"Site {site}")
            desired.set_card_list(engine, edge_id, entries)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    users.add_user(engine, "bench@example.org", hash_password(PASSWORD), "operator", fleet_ids[0])
    return fleet_ids[0]


async def time_pages(engine: Engine, paths: list[str], requests: int) -> dict[str, list[float]]:
    settings = CloudSettings(api={"token": "bench"})
    api = create_cloud_api(settings, engine, Ed25519PrivateKey.generate())
    clock = ServerClock(protect_cloud_api(api, settings.api, settings.firmware.max_image_bytes))
    transport = httpx.ASGITransport(app=clock)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        form = await client.get("/web/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        answer = await client.post(
            "/web/login",
            data={"email": "bench@example.org", "password": PASSWORD, "csrf_token": token[1]},
        )
        assert answer.status_code == 303, answer.text
        for path in paths:
            page = await client.get(path)
            assert page.status_code == 200 and 'class="card"' in page.text, path
        clock.times.clear()
        times: dict[str, list[float]] = {}
        for path in paths:
            for _ in range(requests):
                await client.get(path)
            times[path] = clock.times.pop("/web/cards")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--cards", type=int, default=20_000)
    parser.add_argument("--import-lines", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--store-url", default=os.environ.get("BENCH_STORE_URL"))
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = options.store_url or f"sqlite:///{Path(directory) / 'cloud.db'}"
        engine = open_store(url)  # --store-url: an empty database
        started = time.perf_counter()
        fleet_id = seed(engine, options.sites, options.cards)
        print(
            f"{engine.dialect.name}: 2 fleets x {options.sites} sites x {options.cards} cards "
            f"seeded in {time.perf_counter() - started:.1f} s"
        )
        middle = f"{fleet_id:02d}{options.cards // 2:08X}"
        paths = ["/web/cards", f"/web/cards?after={middle}", "/web/cards?q=car+1999"]
        times = asyncio.run(time_pages(engine, paths, options.requests))
        worst = 0.0
        for path, values in times.items():
            p50, p99 = statistics.median(values), percentile(values, 0.99)
            worst = max(worst, p50)
            print(f"  GET {path}: p50 {p50:.1f} ms, p99 {p99:.1f} ms (limit {PAGE_LIMIT_MS:.0f})")

        card = cards_store.fleet_card(engine, fleet_id, f"{fleet_id:02d}{7:08X}")
        assert card is not None
        started = time.perf_counter()
        result = card_edits.change_cards(
            engine,
            fleet_id,
            [
                card_edits.CardChange(
                    card.id_tag, {"status": "Blocked"}, expected_revision=card.revision
                )
            ],
            "bench",
        )
        print(
            f"  one card blocked at every site: {len(result.versions)} new lists of "
            f"{options.cards} cards in {time.perf_counter() - started:.2f} s"
        )

        lines = ["id_tag,status,label"]
        lines += [
            f"{fleet_id:02d}{number:08X},Blocked,imported {number}"
            for number in range(0, options.import_lines * 4 // 5)
        ]
        lines += [
            f"NEW{number:08X},Accepted,new {number}" for number in range(options.import_lines // 5)
        ]
        text_file = "\n".join(lines) + "\n"
        started = time.perf_counter()
        parsed = card_csv.parse_card_csv(text_file, 1_000_000)
        changes, errors = import_changes(parsed.rows, None)
        plan = card_edits.preview_changes(engine, fleet_id, changes)
        assert not errors and not plan.errors and not parsed.errors
        previewed = time.perf_counter() - started
        started = time.perf_counter()
        card_edits.change_cards(
            engine, fleet_id, changes, "bench", previewed=(plan.mark, plan.digest)
        )
        applied = time.perf_counter() - started
        print(
            f"  import of {options.import_lines} lines ({len(text_file)} bytes): preview "
            f"{previewed:.2f} s, apply {applied:.2f} s ({len(plan.edges)} new lists)"
        )

        started = time.perf_counter()
        rows = cards_store.export_cards(engine, cards_store.CardFilter(fleet_id))
        size = sum(len(chunk) for chunk in card_csv.export_lines(rows))
        print(
            f"  CSV export of the fleet's {options.cards + options.import_lines // 5} cards: "
            f"{size} bytes in {time.perf_counter() - started:.2f} s"
        )
        engine.dispose()
    return 0 if worst <= PAGE_LIMIT_MS else 1


if __name__ == "__main__":
    sys.exit(main())
