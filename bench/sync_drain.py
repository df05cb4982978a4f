"""How fast an edge's backlog reaches the cloud: a site back from a long time offline
with 100,000 events waiting, drained through the real broker into the aggregator.

In one run, on one mosquitto: first the broker's raw QoS 1 publish rate (bench/mqtt_raw.py,
300-byte messages, 1,000 in flight: the limit), then the edge daemon and the aggregator,
each its own process, the edge starting with the backlog in its outbox. The time runs
from the edge's start until the cloud holds every event and the edge's outbox is empty.

    python -m bench.sync_drain [--events 100000] [--store-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from sqlalchemy import create_engine, func, select

from bench.mqtt_raw import raw_qos1_rate, start_mosquitto
from bench.processes import free_port, log_tail, prepare_environment, stop, wait_listening
from cloud.store.schema import events as cloud_events
from contract import protocol as wire
from edge.clock import utc_now_text
from edge.store.database import open_database
from edge.sync.outbox import Outbox

TARGET_RATIO = 0.5
TARGET_SECONDS = 60.0
EDGE_ID = "bench-site"


def site_events(count: int, chargers: int = 20) -> list[wire.EventData]:
    """What a 20-charger site produces while offline: mostly status changes and meter
    summaries, with card decisions and transactions among them."""
    random.seed(7)
    made: list[wire.EventData] = []
    transaction = 0
    while len(made) < count:
        charger = f"CP-{random.randrange(chargers):02d}"
        roll = random.random()
        if roll < 0.45:
            made.append(
                wire.TransactionMeter(
                    charger_id=charger,
                    transaction_id=transaction,
                    meter_wh=random.randrange(10**7),
                    energy_wh=random.randrange(60_000),
                    power_w=7200.0,
                )
            )
        elif roll < 0.80:
            made.append(
                wire.ConnectorStatus(
                    charger_id=charger,
                    connector_id=random.choice((1, 2)),
                    status=random.choice(("Available", "Preparing", "Charging", "Finishing")),
                    error_code="NoError",
                )
            )
        elif roll < 0.90:
            made.append(
                wire.CardUsed(
                    id_tag=f"04{random.randrange(16**6):06X}",
                    source="charger",
                    action="authorize",
                    status="Accepted",
                    reason="card accepted",
                    charger_id=charger,
                )
            )
        else:
            transaction += 1
            made.append(
                wire.TransactionStarted(
                    charger_id=charger,
                    connector_id=1,
                    transaction_id=transaction,
                    id_tag="04A2B3C4",
                    id_tag_status="Accepted",
                    meter_start_wh=random.randrange(10**7),
                    started_at=utc_now_text(),
                )
            )
    return made[:count]


def fill_outbox(database: Path, count: int) -> None:
    db = open_database(database)
    outbox = Outbox(enabled=True)
    with db.conn:
        db.conn.execute("BEGIN")
        for event in site_events(count):
            outbox.append(db, event)
    db.conn.close()


def outbox_size(database: Path) -> int:
    with closing(sqlite3.connect(database, timeout=30)) as connection:
        return int(connection.execute("SELECT count(*) FROM outbox").fetchone()[0])


def cloud_count(store_url: str) -> int:
    engine = create_engine(store_url)
    try:
        with engine.connect() as connection:
            query = select(func.count()).select_from(cloud_events)
            return int(
                connection.execute(query.where(cloud_events.c.edge_id == EDGE_ID)).scalar_one()
            )
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description="Drain of an edge's backlog into the cloud.")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--store-url", help="the aggregator's store (default: SQLite, scratch)")
    parser.add_argument("--batch", type=int, default=0, help="[sync] batch_max_events (0: default)")
    options = parser.parse_args()
    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as scratch:
        workdir = Path(scratch)
        broker, broker_port = start_mosquitto(workdir)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            raw = asyncio.run(raw_qos1_rate("127.0.0.1", broker_port, 20_000, 300))
            store_url = options.store_url or f"sqlite:///{workdir / 'cloud.db'}"
            api_port = free_port()
            cloud_config = workdir / "cloud.toml"
            cloud_config.write_text(
                f'[store]\nurl = "{store_url}"\n'
                f'[mqtt]\nbroker_host = "127.0.0.1"\nbroker_port = {broker_port}\n'
                f'[api]\nport = {api_port}\ntoken = "{secrets.token_urlsafe(16)}"\n'
                f'[firmware]\ndirectory = "{workdir / "fw"}"\n'
                f'signing_key = "{workdir / "fleet.key"}"\n'
            )
            cloud_log = workdir / "cloud.log"
            with cloud_log.open("wb") as output:
                cloud = subprocess.Popen(
                    [sys.executable, "-m", "cloud", "run", "--config", str(cloud_config)],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            processes.append(cloud)
            wait_listening(api_port, cloud, cloud_log)

            database = workdir / "edge.db"
            started = time.perf_counter()
            fill_outbox(database, options.events)
            filled = time.perf_counter() - started
            ocpp_port = free_port()
            batch = f"batch_max_events = {options.batch}\n" if options.batch else ""
            edge_config = workdir / "edge.toml"
            edge_config.write_text(
                f'[ocpp]\nhost = "127.0.0.1"\nport = {ocpp_port}\n[api]\nport = 0\n'
                f'[files]\nport = 0\ndirectory = "{workdir / "files"}"\n'
                f'[store]\npath = "{database}"\n[log]\nlevel = "WARNING"\n'
                f'[sync]\nedge_id = "{EDGE_ID}"\nbroker_host = "127.0.0.1"\n'
                f"broker_port = {broker_port}\n{batch}"
            )
            edge_log = workdir / "edge.log"
            started = time.perf_counter()
            with edge_log.open("wb") as output:
                edge = subprocess.Popen(
                    [sys.executable, "-m", "edge", "run", "--config", str(edge_config)],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            processes.append(edge)
            deadline = started + 600
            while outbox_size(database) > 0:
                if edge.poll() is not None or cloud.poll() is not None:
                    print(f"a process ended:\n{log_tail(edge_log)}\n{log_tail(cloud_log)}")
                    return 1
                if time.perf_counter() > deadline:
                    print(f"not drained after 600 s:\n{log_tail(edge_log)}")
                    return 1
                time.sleep(0.1)
            drained = time.perf_counter() - started
            stored = cloud_count(store_url)
        finally:
            for process in reversed(processes):
                stop(process)
            stop(broker)
    rate = options.events / drained
    ratio = rate / raw
    print(f"\nbacklog: {options.events} events (written to the outbox in {filled:.1f} s)")
    print(f"{'':<42} {'per second':>11}")
    print(f"{'limit: raw QoS 1 publishes, same broker':<42} {raw:>11,.0f}")
    print(f"{'edge -> broker -> aggregator (events)':<42} {rate:>11,.0f}")
    print(
        f"\ndrained in {drained:.1f} s (target < {TARGET_SECONDS:.0f} s); ratio {ratio:.2f} "
        f"(target >= {TARGET_RATIO})"
    )
    ok = stored == options.events and drained < TARGET_SECONDS and ratio >= TARGET_RATIO
    if stored != options.events:
        print(f"FAIL: the cloud holds {stored} events, not {options.events}")
    elif not ok:
        print("MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
