"""What a quiet site costs a Pi: CPU-seconds per hour and bytes written to disk per day
(SD cards wear), for the edge daemon and, in the same run, for a first-try central
system on the `ocpp` library that commits each message (bench/first_try_csms.py).

Each server gets its own chargers (20 by default) at a real charger's pace: a Heartbeat
every 300 s and MeterValues with 10 measurands every 60 s, each charger's first call
spread over the interval as real chargers' clocks are. Both servers run side by side
for the same minutes; their CPU time comes from /proc/PID/stat and their writes from
/proc/PID/io (`write_bytes`: what reached the block layer, fsyncs included), counted
after every charger has booted, then scaled to an hour and a day.

    python -m bench.quiet_site [--chargers 20] [--minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from bench.load import Charger, now_iso
from bench.processes import BENCH, free_port, prepare_environment, stop, wait_listening

MEASURANDS = [
    ("Energy.Active.Import.Register", "Wh", None),
    ("Power.Active.Import", "W", None),
    ("Current.Import", "A", "L1"),
    ("Current.Import", "A", "L2"),
    ("Current.Import", "A", "L3"),
    ("Voltage", "V", "L1-N"),
    ("Voltage", "V", "L2-N"),
    ("Voltage", "V", "L3-N"),
    ("Frequency", None, None),
    ("Temperature", "Celsius", None),
]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Usage:
    cpu_seconds: float
    written_bytes: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = int(fields[11]), int(fields[12])  # utime, stime
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        return cls((user + system) / CLOCK_TICKS, int(io["write_bytes"]))


def meter_values(transaction_id: int, wh: int) -> dict[str, Any]:
    sampled = []
    for measurand, unit, phase in MEASURANDS:
        value: dict[str, Any] = {"value": str(wh if unit == "Wh" else 230), "measurand": measurand}
        if unit:
            value["unit"] = unit
        if phase:
            value["phase"] = phase
        sampled.append(value)
    return {
        "connectorId": 1,
        "transactionId": transaction_id,
        "meterValue": [{"timestamp": now_iso(), "sampledValue": sampled}],
    }


async def quiet_charger(
    url: str, name: str, offset: float, options: argparse.Namespace, until: float
) -> int:
    """One charger at a real pace until `until`; returns the calls it made."""
    async with connect(
        f"{url}/{name}", subprotocols=[Subprotocol("ocpp1.6")], open_timeout=60
    ) as connection:
        charger = Charger(connection)
        await charger.call(
            "BootNotification", {"chargePointVendor": "Quiet", "chargePointModel": "Q"}
        )
        await charger.call(
            "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
        )
        started = await charger.call(
            "StartTransaction",
            {"connectorId": 1, "idTag": "QUIET", "meterStart": 0, "timestamp": now_iso()},
        )
        transaction_id = int(started.get("transactionId", 1))
        calls, wh = 3, 0
        next_meter = time.monotonic() + offset % options.meter_every
        next_heartbeat = time.monotonic() + offset % options.heartbeat_every
        while (now := time.monotonic()) < until:
            await asyncio.sleep(max(0.0, min(next_meter, next_heartbeat, until) - now))
            if time.monotonic() >= until:
                break
            if next_meter <= next_heartbeat:
                wh += 120
                await charger.call("MeterValues", meter_values(transaction_id, wh))
                next_meter += options.meter_every
            else:
                await charger.call("Heartbeat", {})
                next_heartbeat += options.heartbeat_every
            calls += 1
        return calls


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str


def start_edge(workdir: Path, options: argparse.Namespace) -> Server:
    port = free_port()
    config = workdir / "edge.toml"
    config.write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\npath_prefix = "/ocpp"\n'
        'heartbeat_interval = 300\nunknown_chargers = "accept"\n'
        "[api]\nport = 0\n[files]\nport = 0\n"
        f'[store]\npath = "{workdir / "edge.db"}"\n'
    )
    command = [*shlex.split(options.edge_cmd), "--config", str(config)]
    with (workdir / "edge.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait_listening(port, process, workdir / "edge.log")
    return Server("edge", process, f"ws://127.0.0.1:{port}/ocpp")


def start_first_try(workdir: Path) -> Server:
    port = free_port()
    command = [sys.executable, str(BENCH / "first_try_csms.py"), str(port), str(workdir / "ft.db")]
    with (workdir / "first-try.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait_listening(port, process, workdir / "first-try.log")
    return Server("first-try", process, f"ws://127.0.0.1:{port}")


async def load(servers: list[Server], options: argparse.Namespace) -> dict[str, Any]:
    """Every server's chargers for `minutes`; usage counted from the last boot on."""
    seconds = options.minutes * 60
    until = time.monotonic() + seconds + 10
    spread = options.meter_every / options.chargers
    tasks = {
        server.name: [
            asyncio.create_task(quiet_charger(server.url, f"quiet-{n}", n * spread, options, until))
            for n in range(options.chargers)
        ]
        for server in servers
    }
    await asyncio.sleep(10)  # every charger booted and started
    before = {server.name: Usage.of(server.process.pid) for server in servers}
    started = time.monotonic()
    results = {name: await asyncio.gather(*group) for name, group in tasks.items()}
    elapsed = time.monotonic() - started
    booting_calls = 3  # per charger, before the count began
    figures = {}
    for server in servers:
        after = Usage.of(server.process.pid)
        used = before[server.name]
        figures[server.name] = {
            "calls": sum(results[server.name]) - booting_calls * options.chargers,
            "cpu_s_per_hour": (after.cpu_seconds - used.cpu_seconds) * 3600 / elapsed,
            "mb_per_day": (after.written_bytes - used.written_bytes) * 86400 / elapsed / 1e6,
        }
        calls = max(figures[server.name]["calls"], 1)
        figures[server.name]["kb_per_call"] = (
            (after.written_bytes - used.written_bytes) / calls / 1e3
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--heartbeat-every", type=float, default=300.0)
    parser.add_argument("--meter-every", type=float, default=60.0)
    parser.add_argument("--edge-cmd", default=f"{sys.executable} -m edge run")
    parser.add_argument(
        "--directory",
        default="/var/tmp",
        help="where the stores are written: on a disk, not tmpfs (whose writes are free)",
    )
    options = parser.parse_args()
    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="ocpp-quiet-", dir=options.directory) as directory:
        workdir = Path(directory)
        servers = [start_edge(workdir, options), start_first_try(workdir)]
        try:
            figures = asyncio.run(load(servers, options))
        finally:
            for server in servers:
                stop(server.process)
    edge, peer = figures["edge"], figures["first-try"]
    print(
        f"\nquiet site: {options.chargers} chargers, Heartbeat every {options.heartbeat_every:.0f}"
        f" s, MeterValues ({len(MEASURANDS)} measurands) every {options.meter_every:.0f} s,"
        f" {options.minutes:g} min measured\n"
    )
    print(f"{'server':<10} {'calls':>6} {'CPU s/hour':>11} {'MB written/day':>15} {'KB/call':>8}")
    for name, values in figures.items():
        print(
            f"{name:<10} {values['calls']:>6} {values['cpu_s_per_hour']:>11.1f}"
            f" {values['mb_per_day']:>15.1f} {values['kb_per_call']:>8.1f}"
        )
    print(
        f"\nedge / first-try: CPU {edge['cpu_s_per_hour'] / max(peer['cpu_s_per_hour'], 1e-9):.2f},"
        f" written {edge['mb_per_day'] / max(peer['mb_per_day'], 1e-9):.2f}"
        " (the edge keeps more: every frame in the message log, an outbox for the cloud)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
