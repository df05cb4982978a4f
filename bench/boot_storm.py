"""A site's power comes back: every charger reconnects at once to an edge that holds the
card table, while one charger that stayed up (the bystander) sends a Heartbeat every
100 ms and times each answer.

The chargers are the project's simulated chargers (edge/simulator.py, this process),
with the configuration keys real ones report: a mix of `SendLocalListMaxLength` 50-500
and `LocalAuthListMaxLength` 100-1000, some without `LocalAuthListManagement`. The
edge is the real daemon in its own process, its card table filled by `ocpp-edge cards
import` beforehand. Prints the time until every charger was Accepted and holds its
local list (or was rightly skipped), the bystander's round trips, and the daemon's
peak and settled RSS, each beside its target.

    python -m bench.boot_storm [--chargers 200] [--cards 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import random
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from bench.load import Charger, rss_mb
from bench.processes import free_port, log_tail, prepare_environment, stop, wait_listening
from edge.simulator import SimulatedCharger, SimulatedChargerConfig

TARGET_BYSTANDER_MAX_MS = 250.0
TARGET_ALL_LISTED_S = 60.0
TARGET_PEAK_RSS_MB = 150.0
TARGET_SETTLED_RSS_MB = 120.0
BYSTANDER_EVERY_S = 0.1
# Five vendors' worth of local-list limits: (SendLocalListMaxLength, LocalAuthListMaxLength,
# the feature profile listed).
VENDOR_LIMITS = [
    (50, 100, True),
    (100, 500, True),
    (250, 1000, True),
    (500, 1000, True),
    (0, 0, False),
]
FEATURES_WITH_LIST = "Core,FirmwareManagement,LocalAuthListManagement,Reservation,RemoteTrigger"
FEATURES_WITHOUT = "Core,FirmwareManagement,RemoteTrigger"


@dataclass
class StormCharger:
    charger: SimulatedCharger
    keeps_a_list: bool
    accepted_at: float | None = None
    listed_at: float | None = None


def write_cards(path: Path, cards: int) -> None:
    lines = ["id_tag,status,parent_id_tag,label"]
    lines += [f"STORM{n:07d},Accepted,FLEET{n % 40},driver {n}" for n in range(cards)]
    path.write_text("\n".join(lines) + "\n")


def card_list_version(database: Path) -> int:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT version FROM local_list_counter").fetchone()[0])


def start_edge(workdir: Path, options: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = workdir / "edge.toml"
    config.write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\npath_prefix = "/ocpp"\n'
        'heartbeat_interval = 300\nunknown_chargers = "accept"\n'
        # Every charger of the storm comes from loopback: a site's chargers have their
        # own addresses, so the per-address limits are lifted here.
        "max_connections_per_address = 10000\nhandshakes_per_minute_per_address = 100000\n"
        "[api]\nport = 0\n[files]\nport = 0\n"
        f'[store]\npath = "{workdir / "edge.db"}"\n'
    )
    cards = workdir / "cards.csv"
    write_cards(cards, options.cards)
    edge = shlex.split(options.edge_cmd)
    # The same program's `cards import` (the command without its last word, `run`).
    subprocess.run(
        [*edge[:-1], "cards", "import", str(cards), "--config", str(config)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    log = workdir / "edge.log"
    process = subprocess.Popen(
        [*edge, "--config", str(config)], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    wait_listening(port, process, log)
    return process, f"ws://127.0.0.1:{port}/ocpp"


def storm_config(number: int) -> tuple[SimulatedChargerConfig, bool]:
    send_max, list_max, has_feature = VENDOR_LIMITS[number % len(VENDOR_LIMITS)]
    config = SimulatedChargerConfig(
        connectors=2,
        vendor=f"Vendor{number % len(VENDOR_LIMITS)}",
        model="Storm",
        feature_profiles=FEATURES_WITH_LIST if has_feature else FEATURES_WITHOUT,
        local_list_enabled=has_feature,
        send_local_list_max_length=send_max,
        local_list_max_length=list_max,
    )
    return config, has_feature


async def reconnecting(url: str) -> ClientConnection:
    """A connection as a charger gets one in a storm: refused with 503 while the edge
    admits others, it comes back after the Retry-After it was given."""
    while True:
        try:
            return await connect(
                url, subprotocols=[Subprotocol("ocpp1.6")], open_timeout=120, ping_interval=None
            )
        except InvalidStatus as refused:
            if refused.response.status_code != 503:
                raise
            await asyncio.sleep(float(refused.response.headers.get("Retry-After", "10")))


async def storm_charger(
    url: str, number: int, started: float, chargers: list[StormCharger], stop: asyncio.Event
) -> None:
    config, keeps_a_list = storm_config(number)
    async with await reconnecting(f"{url}/storm-{number}") as connection:
        charger = SimulatedCharger(f"storm-{number}", connection, config)
        entry = StormCharger(charger, keeps_a_list)
        chargers.append(entry)
        serving = asyncio.create_task(charger.start())
        try:
            while True:
                response = await charger.boot()
                if response.status == "Accepted":
                    break
                # Pending or Rejected: a charger boots again after the interval it was given.
                await asyncio.sleep(max(1, response.interval))
            entry.accepted_at = time.monotonic() - started
            for connector in (1, 2):
                await charger.send_status(connector, "Available")
            await stop.wait()
        finally:
            serving.cancel()


async def bystander_heartbeats(url: str, ready: Any, stop: Any) -> list[float]:
    """Heartbeats every 100 ms until `stop` is set; each round trip in ms (NaN: failed)."""
    round_trips: list[float] = []
    async with connect(f"{url}/bystander", subprotocols=[Subprotocol("ocpp1.6")]) as connection:
        charger = Charger(connection)
        await charger.call(
            "BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "B"}
        )
        ready.set()
        while not stop.is_set():
            sent = time.perf_counter()
            try:
                await charger.call("Heartbeat", {})
                round_trips.append((time.perf_counter() - sent) * 1000)
            except Exception:
                round_trips.append(float("nan"))
            await asyncio.sleep(max(0.0, BYSTANDER_EVERY_S - (time.perf_counter() - sent)))
    return round_trips


def bystander_process(url: str, ready: Any, stop: Any, results: Any) -> None:
    """The bystander in a process of its own: the storm's simulated chargers must not
    delay its clock."""
    results.send(asyncio.run(bystander_heartbeats(url, ready, stop)))


async def watch_rss(pid: int, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        if (rss := rss_mb(pid)) is not None:
            samples.append(rss)
        await asyncio.sleep(0.1)


async def storm(
    url: str, pid: int, database: Path, options: argparse.Namespace
) -> dict[str, float | int | None]:
    stop_chargers, stop_rss = asyncio.Event(), asyncio.Event()
    rss: list[float] = []
    ready, stop_bystander = multiprocessing.Event(), multiprocessing.Event()
    receiving, sending = multiprocessing.Pipe(duplex=False)
    bystander = multiprocessing.Process(
        target=bystander_process, args=(url, ready, stop_bystander, sending), daemon=True
    )
    bystander.start()
    if not await asyncio.to_thread(ready.wait, 30):
        sys.exit("the bystander could not boot")
    watching = asyncio.create_task(watch_rss(pid, rss, stop_rss))
    settled_before = rss_mb(pid)
    target_version = card_list_version(database)
    chargers: list[StormCharger] = []
    started = time.monotonic()
    tasks = [
        asyncio.create_task(storm_charger(url, n, started, chargers, stop_chargers))
        for n in range(options.chargers)
    ]
    deadline = started + options.timeout
    while time.monotonic() < deadline:
        now = time.monotonic() - started
        for entry in chargers:
            if entry.listed_at is None and entry.accepted_at is not None:
                done = (
                    entry.charger.local_list_version >= target_version
                    if entry.keeps_a_list
                    else True
                )
                entry.listed_at = now if done else None
        if len(chargers) == options.chargers and all(e.listed_at is not None for e in chargers):
            break
        failed = [task for task in tasks if task.done() and task.exception()]
        if failed:
            sys.exit(f"a storm charger failed: {failed[0].exception()!r}")
        await asyncio.sleep(0.1)
    all_listed = max((e.listed_at or float("inf")) for e in chargers) if chargers else None
    all_accepted = max((e.accepted_at or float("inf")) for e in chargers) if chargers else None
    await asyncio.sleep(2)  # the bystander's heartbeats a little past the storm
    stop_bystander.set()
    measured: list[float] = await asyncio.to_thread(receiving.recv)
    bystander.join()
    peak = max(rss) if rss else None
    await asyncio.sleep(options.settle)
    settled = rss_mb(pid)
    stop_rss.set()
    await watching
    stop_chargers.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    trips = sorted(trip for trip in measured if not math.isnan(trip))
    return {
        "all_accepted_s": all_accepted,
        "all_listed_s": all_listed,
        "listed": sum(1 for e in chargers if e.listed_at is not None),
        "p50_ms": statistics.median(trips) if trips else None,
        "p99_ms": trips[int(len(trips) * 0.99)] if trips else None,
        "max_ms": trips[-1] if trips else None,
        "heartbeats": len(trips),
        "heartbeat_failures": sum(1 for trip in measured if math.isnan(trip)),
        "rss_before_mb": settled_before,
        "peak_rss_mb": peak,
        "settled_rss_mb": settled,
    }


def cell(value: float | int | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def verdict(name: str, value: float | None, limit: float, unit: str) -> tuple[str, bool]:
    met = value is not None and value < limit
    shown = "n/a" if value is None else f"{value:.1f}"
    return f"{name:<34} {shown:>9} {unit:<3} (target < {limit:g}){'' if met else ' MISSED'}", met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--cards", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after (s)")
    parser.add_argument("--settle", type=float, default=10.0, help="RSS measured after (s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--edge-cmd", default=f"{sys.executable} -m edge run")
    options = parser.parse_args()
    random.seed(options.seed)
    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="ocpp-storm-") as directory:
        workdir = Path(directory)
        process, url = start_edge(workdir, options)
        try:
            figures = asyncio.run(storm(url, process.pid, workdir / "edge.db", options))
        finally:
            stop(process)
        if process.returncode not in (0, -15):
            print(log_tail(workdir / "edge.log"))
    print(f"\nboot storm: {options.chargers} chargers, {options.cards} cards\n")
    rows = [
        verdict("every charger listed", figures["all_listed_s"], TARGET_ALL_LISTED_S, "s"),
        verdict("bystander max round trip", figures["max_ms"], TARGET_BYSTANDER_MAX_MS, "ms"),
        verdict("peak RSS", figures["peak_rss_mb"], TARGET_PEAK_RSS_MB, "MB"),
        verdict("settled RSS", figures["settled_rss_mb"], TARGET_SETTLED_RSS_MB, "MB"),
    ]
    for line, _ in rows:
        print(line)
    print(
        f"every charger accepted after {cell(figures['all_accepted_s'])} s; "
        f"{figures['listed']}/{options.chargers} listed; bystander p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms over {figures['heartbeats']} heartbeats "
        f"({figures['heartbeat_failures']} failed); RSS before the storm "
        f"{cell(figures['rss_before_mb'])} MB"
    )
    return 0 if all(met for _, met in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
