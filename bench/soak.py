"""Soak: a site of well-behaved chargers beside hostile devices, with sync on.

One mosquitto, one aggregator and one edge daemon, each its own process. First a clean
run: N chargers (20) each send MeterValues every second and a Heartbeat every 30 s
while a transaction runs. Then the same chargers for --minutes while bench/hostile.py,
in its own process, mixes every attack of docs/security.md: malformed, poisoned and
oversized frames, floods of unsolicited results, answers with foreign error codes and
of nearly 1 MiB, unapproved devices trying a real card, slowloris sockets, anonymous
and oversized uploads, cross-site posts, cloud requests without the token.

Prints the chargers' p50/p99 round trip in the attack beside the clean run's, the
daemon's RSS at the start and end of the attack (and its peak), how often the daemon
had to be restarted (must be 0), how many acknowledged meter values the store lacks
(must be 0), and whether the edge's outbox drained into the cloud afterwards.

    python -m bench.soak [--minutes 30] [--chargers 20] [--clean-minutes 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from bench.hostile import ANSWERS_CHARGER, FRAMES_CHARGER, KNOWN_CARD
from bench.load import now_iso, rss_mb
from bench.mqtt_raw import start_mosquitto
from bench.processes import BENCH, free_port, log_tail, prepare_environment, stop, wait_listening
from edge.clock import utc_now_text
from edge.store import chargers, id_tags
from edge.store.database import open_database

EDGE_ID = "soak-site"
CLOUD_TOKEN = "soak-token"
CARD = "50AC0002"
CALL_TIMEOUT_S = 30.0
HEARTBEAT_EVERY_S = 30.0
# What the attack may cost a well-behaved charger: its p99 at most this many times the
# clean run's, or this many milliseconds, whichever is larger.
TARGET_P99_FACTOR = 3.0
TARGET_P99_FLOOR_MS = 100.0
TARGET_RSS_GROWTH_MB = 40.0
TARGET_DRAIN_S = 120.0
# The server's calls a well-behaved charger answers, with what a real one says.
ANSWERS: dict[str, dict[str, Any]] = {
    "GetConfiguration": {"configurationKey": []},
    "GetLocalListVersion": {"listVersion": 0},
    "GetCompositeSchedule": {"status": "Rejected"},
    "DataTransfer": {"status": "Rejected"},
}


@dataclass
class Figures:
    """What the well-behaved chargers saw, per phase."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"clean": [], "soak": []})
    # (transaction id, energy register) of every acknowledged MeterValues.
    acknowledged: set[tuple[int, str]] = field(default_factory=set)
    transactions: set[int] = field(default_factory=set)
    # Calls that got no answer (a closed connection, a timeout), per phase.
    unanswered: dict[str, int] = field(default_factory=lambda: {"clean": 0, "soak": 0})
    reconnects: int = 0
    failures: list[str] = field(default_factory=list)
    phase: str = "clean"

    def fail(self, reason: str) -> None:
        if len(self.failures) < 10:
            self.failures.append(reason)


class Supervised:
    """The edge daemon, restarted when it exits as systemd's Restart=on-failure would,
    and every restart counted."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.command = command
        self.log = log
        self.restarts = 0
        self.process = self._start()
        self._watching = True
        self._watch = threading.Thread(target=self._keep_running, daemon=True)
        self._watch.start()

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as output:
            return subprocess.Popen(self.command, stdout=output, stderr=subprocess.STDOUT)

    def _keep_running(self) -> None:
        while self._watching:
            if self.process.poll() is not None and self._watching:
                self.restarts += 1
                print(f"!!! the edge daemon exited ({self.process.returncode}); restarting")
                self.process = self._start()
            time.sleep(0.5)

    def stop(self) -> None:
        self._watching = False
        self._watch.join()
        stop(self.process)


class Charger:
    """A well-behaved charger: one call outstanding, answers the server's calls."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.ids = itertools.count()

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        unique_id = str(next(self.ids))
        await self.connection.send(json.dumps([2, unique_id, action, payload]))
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while True:
                reply = json.loads(await self.connection.recv())
                if reply[0] == 2:
                    answer = ANSWERS.get(reply[2], {"status": "Accepted"})
                    await self.connection.send(json.dumps([3, reply[1], answer]))
                    continue
                if reply[1] == unique_id:
                    break
        if reply[0] != 3:
            raise RuntimeError(f"{action} answered {str(reply)[:200]}")
        result: dict[str, Any] = reply[2]
        return result


async def well_behaved(url: str, charger_id: str, figures: Figures, until: float) -> None:
    """Boot, start a transaction, send MeterValues every second; reconnect when cut."""
    energy = itertools.count(1)
    while time.monotonic() < until:
        try:
            async with await connect(
                f"{url}/{charger_id}", subprotocols=[Subprotocol("ocpp1.6")], open_timeout=30
            ) as connection:
                charger = Charger(connection)
                boot = {"chargePointVendor": "Soak", "chargePointModel": "Steady"}
                await charger.call("BootNotification", boot)
                started = await charger.call(
                    "StartTransaction",
                    {"connectorId": 1, "idTag": CARD, "meterStart": 0, "timestamp": now_iso()},
                )
                transaction = int(started["transactionId"])
                figures.transactions.add(transaction)
                last_heartbeat = time.monotonic()
                next_at = time.monotonic()
                while (next_at := next_at + 1.0) < until:
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    value = str(next(energy) * 10)
                    phase = figures.phase
                    sent = time.perf_counter()
                    await charger.call("MeterValues", _meter_values(transaction, value))
                    figures.latencies[phase].append(time.perf_counter() - sent)
                    figures.acknowledged.add((transaction, value))
                    if time.monotonic() - last_heartbeat >= HEARTBEAT_EVERY_S:
                        sent = time.perf_counter()
                        await charger.call("Heartbeat", {})
                        figures.latencies[phase].append(time.perf_counter() - sent)
                        last_heartbeat = time.monotonic()
        except (OSError, WebSocketException, ConnectionClosed, TimeoutError, RuntimeError) as error:
            figures.reconnects += 1
            figures.unanswered[figures.phase] += 1
            figures.fail(f"{charger_id}: {error!r}")
            await asyncio.sleep(1)


def _meter_values(transaction_id: int, energy_wh: str) -> dict[str, Any]:
    sampled = [
        {"value": energy_wh, "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
    ]
    return {
        "connectorId": 1,
        "transactionId": transaction_id,
        "meterValue": [{"timestamp": now_iso(), "sampledValue": sampled}],
    }


def percentile_ms(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


def lost_values(database: Path, figures: Figures) -> int:
    """Acknowledged energy readings that are not in the store."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        stored = set(
            db.execute(
                "SELECT transaction_id, value FROM meter_values "
                "WHERE measurand = 'Energy.Active.Import.Register' AND transaction_id IN "
                "(SELECT value FROM json_each(?))",
                (json.dumps(sorted(figures.transactions)),),
            ).fetchall()
        )
    return len(figures.acknowledged - stored)


def outbox_backlog(database: Path) -> int:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


def prepare_site(database: Path, normal: int) -> list[str]:
    """The site's chargers (accepted) and cards, written before the daemon starts."""
    db = open_database(database)
    names = [f"soak-{number:02d}" for number in range(1, normal + 1)]
    now = utc_now_text()
    with db.conn:
        for charger_id in [*names, FRAMES_CHARGER, ANSWERS_CHARGER]:
            chargers.add_charger(db, charger_id, "accepted", now)
        for card in (CARD, KNOWN_CARD):
            id_tags.save_id_tag(db, card, now, label="soak card")
    db.conn.close()
    return names


@contextlib.contextmanager
def rss_sampler(process: Supervised) -> Iterator[list[float]]:
    samples: list[float] = []
    running = True

    def sample() -> None:
        while running:
            value = rss_mb(process.process.pid)
            if value is not None:
                samples.append(value)
            time.sleep(1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        running = False
        thread.join()


async def drive(
    url: str,
    names: list[str],
    figures: Figures,
    clean_s: float,
    soak_s: float,
    hostile: Callable[[], subprocess.Popen[str]],
) -> dict[str, Any]:
    """The clean run, then the attack (`hostile` starts it and returns its process)."""
    until = time.monotonic() + clean_s + soak_s
    tasks = [asyncio.create_task(well_behaved(url, name, figures, until)) for name in names]
    await asyncio.sleep(clean_s)
    figures.phase = "soak"
    attack = await asyncio.to_thread(hostile)
    await asyncio.gather(*tasks)
    out, _ = await asyncio.to_thread(attack.communicate)
    counts: dict[str, Any] = json.loads(out or "{}")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30.0, help="the attack's length")
    parser.add_argument("--clean-minutes", type=float, help="default: a fifth, 0.5 to 5")
    parser.add_argument("--chargers", type=int, default=20)
    options = parser.parse_args()
    clean_minutes = options.clean_minutes or min(5.0, max(0.5, options.minutes / 5))
    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as scratch:
        workdir = Path(scratch)
        broker, broker_port = start_mosquitto(workdir)
        cloud: subprocess.Popen[bytes] | None = None
        edge: Supervised | None = None
        try:
            cloud_port = free_port()
            cloud_config = workdir / "cloud.toml"
            cloud_config.write_text(
                f'[store]\nurl = "sqlite:///{workdir / "cloud.db"}"\n'
                f'[mqtt]\nbroker_host = "127.0.0.1"\nbroker_port = {broker_port}\n'
                f'[api]\nport = {cloud_port}\ntoken = "{CLOUD_TOKEN}"\n'
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
            wait_listening(cloud_port, cloud, cloud_log)

            database = workdir / "edge.db"
            names = prepare_site(database, options.chargers)
            ocpp_port, api_port, files_port = free_port(), free_port(), free_port()
            edge_config = workdir / "edge.toml"
            edge_config.write_text(
                f'[ocpp]\nhost = "127.0.0.1"\nport = {ocpp_port}\nunknown_chargers = "pending"\n'
                f"[api]\nport = {api_port}\n"
                f'[files]\nport = {files_port}\ndirectory = "{workdir / "files"}"\n'
                f'[store]\npath = "{database}"\n[log]\nlevel = "ERROR"\n'
                f'[sync]\nedge_id = "{EDGE_ID}"\nbroker_host = "127.0.0.1"\n'
                f"broker_port = {broker_port}\n"
            )
            edge_log = workdir / "edge.log"
            edge = Supervised(
                [sys.executable, "-m", "edge", "run", "--config", str(edge_config)], edge_log
            )
            wait_listening(ocpp_port, edge.process, edge_log)
            wait_listening(api_port, edge.process, edge_log)

            url = f"ws://127.0.0.1:{ocpp_port}/ocpp"
            hostile_command = [
                sys.executable,
                str(BENCH / "hostile.py"),
                url,
                f"http://127.0.0.1:{api_port}",
                f"http://127.0.0.1:{files_port}",
                f"http://127.0.0.1:{cloud_port}",
                CLOUD_TOKEN,
                EDGE_ID,
                str(options.minutes * 60),
            ]

            figures = Figures()
            print(
                f"clean run {clean_minutes:g} min, then {options.minutes:g} min under attack, "
                f"{options.chargers} chargers ...",
                flush=True,
            )
            with rss_sampler(edge) as rss:
                clean_samples = 0

                def begin_attack() -> subprocess.Popen[str]:
                    nonlocal clean_samples
                    clean_samples = len(rss)
                    return subprocess.Popen(hostile_command, stdout=subprocess.PIPE, text=True)

                counts = asyncio.run(
                    drive(
                        url, names, figures, clean_minutes * 60, options.minutes * 60, begin_attack
                    )
                )
            started = time.monotonic()
            while (backlog := outbox_backlog(database)) and time.monotonic() - started < 600:
                time.sleep(1)
            drained_s = time.monotonic() - started
            lost = lost_values(database, figures)
            restarts = edge.restarts
        finally:
            if edge is not None:
                edge.stop()
            if cloud is not None:
                stop(cloud)
            stop(broker)
        edge_tail = log_tail(edge_log)
    clean_p50 = percentile_ms(figures.latencies["clean"], 0.5)
    clean_p99 = percentile_ms(figures.latencies["clean"], 0.99)
    soak_p50 = percentile_ms(figures.latencies["soak"], 0.5)
    soak_p99 = percentile_ms(figures.latencies["soak"], 0.99)
    soak_max = percentile_ms(figures.latencies["soak"], 1.0)
    soak_rss = rss[clean_samples:] or rss
    rss_start, rss_end, rss_peak = soak_rss[0], soak_rss[-1], max(soak_rss)
    p99_limit = max(TARGET_P99_FLOOR_MS, (clean_p99 or 0.0) * TARGET_P99_FACTOR)

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    print("\nwhat the hostile devices did:")
    for name, count in counts.items():
        print(f"  {count:>7}  {name}")
    print(f"\n{'well-behaved chargers':<34} {'clean':>9} {'attack':>9}")
    print(
        f"{'calls answered':<34} {len(figures.latencies['clean']):>9} "
        f"{len(figures.latencies['soak']):>9}"
    )
    print(
        f"{'calls unanswered (cut, timed out)':<34} {figures.unanswered['clean']:>9} "
        f"{figures.unanswered['soak']:>9}"
    )
    print(f"{'p50 round trip (ms)':<34} {ms(clean_p50):>9} {ms(soak_p50):>9}")
    print(f"{'p99 round trip (ms)':<34} {ms(clean_p99):>9} {ms(soak_p99):>9}")
    print(f"{'max round trip (ms)':<34} {'':>9} {ms(soak_max):>9}")
    print(f"reconnects of well-behaved chargers: {figures.reconnects}")
    for failure in figures.failures:
        print(f"  e.g. {failure}")
    verdicts = [
        (
            f"p99 under attack {ms(soak_p99)} ms (target < {p99_limit:.0f} ms: "
            f"{TARGET_P99_FACTOR:g} x clean, at least {TARGET_P99_FLOOR_MS:.0f})",
            soak_p99 is not None and soak_p99 < p99_limit,
        ),
        (
            f"RSS {rss_start:.0f} MB at the attack's start, {rss_end:.0f} MB at its end, "
            f"peak {rss_peak:.0f} MB (target: growth < {TARGET_RSS_GROWTH_MB:.0f} MB)",
            rss_end - rss_start < TARGET_RSS_GROWTH_MB,
        ),
        (f"daemon restarts {restarts} (must be 0)", restarts == 0),
        (
            f"well-behaved calls unanswered under attack {figures.unanswered['soak']} (must be 0)",
            figures.unanswered["soak"] == 0,
        ),
        (
            f"acknowledged meter values lost {lost} of {len(figures.acknowledged)} (must be 0)",
            lost == 0,
        ),
        (
            f"outbox drained to the cloud in {drained_s:.1f} s after the attack, "
            f"{backlog} left (target: 0 within {TARGET_DRAIN_S:.0f} s)",
            backlog == 0 and drained_s < TARGET_DRAIN_S,
        ),
    ]
    print()
    for text, met in verdicts:
        print(text + ("" if met else "  MISSED"))
    if restarts:
        print(f"\nthe edge's log ends:\n{edge_tail}")
    return 0 if all(met for _, met in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
