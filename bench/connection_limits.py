"""What one hostile connection costs the edge daemon (its own process, a real SQLite file):

1. RSS before and after `--flood-mib` MiB of CALLRESULTs that answer nothing, sent as
   fast as the edge reads them (~200 KiB frames that parse into 13,000-entry dicts).
2. The event-loop stall while the edge handles one big MeterValues: another charger's
   Heartbeats, sent back to back, are timed; the stall is their longest round trip
   minus their median.

    python -m bench.connection_limits [--flood-mib 28] [--sampled-values 1000 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench.processes import free_port, prepare_environment, stop, wait_listening

OCPP = [Subprotocol("ocpp1.6")]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def call(
    link: ClientConnection, unique_id: str, action: str, payload: object
) -> list[object]:
    await link.send(json.dumps([2, unique_id, action, payload]))
    while True:
        reply = json.loads(await link.recv())
        if reply[1] == unique_id:
            return list(reply)


async def flood(url: str, mebibytes: int) -> int:
    """Send `mebibytes` of unsolicited CALLRESULTs; return when the edge has read them."""
    payload = {f"k{key:05d}": key for key in range(13_000)}
    frame_size = len(json.dumps([3, "nobody-00000", payload]))
    frames = mebibytes * 1024 * 1024 // frame_size + 1
    async with connect(f"{url}/flood", subprotocols=OCPP, max_size=None) as link:
        for number in range(frames):
            await link.send(json.dumps([3, f"nobody-{number:05d}", payload]))
        await call(link, "last", "Heartbeat", {})  # frames are handled in order
    return frames


def meter_values(count: int) -> dict[str, object]:
    sampled = [
        {
            "value": f"{number}.5",
            "context": "Sample.Periodic",
            "measurand": "Energy.Active.Import.Register",
            "phase": "L1",
            "location": "Outlet",
            "unit": "Wh",
        }
        for number in range(count)
    ]
    return {
        "connectorId": 1,
        "meterValue": [{"timestamp": now_iso(), "sampledValue": sampled}],
    }


async def stall(url: str, sampled_values: int) -> tuple[int, float, float]:
    """(frame bytes, the big MeterValues' own round trip, another charger's worst delay)."""
    payload = meter_values(sampled_values)
    size = len(json.dumps([2, "big", "MeterValues", payload]))
    async with (
        connect(f"{url}/probe", subprotocols=OCPP) as probe,
        connect(f"{url}/big", subprotocols=OCPP, max_size=None) as big,
    ):
        times: list[float] = []
        done = asyncio.Event()

        async def probing() -> None:
            number = 0
            while not done.is_set() or number < 50:
                started = time.perf_counter()
                await call(probe, f"p{number}", "Heartbeat", {})
                times.append(time.perf_counter() - started)
                number += 1

        prober = asyncio.create_task(probing())
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        reply = await call(big, "big", "MeterValues", payload)
        own = time.perf_counter() - started
        done.set()
        await prober
    if reply[0] != 3:
        print(f"  the edge answered {reply[:4]}")
    return size, own, max(times) - statistics.median(times)


async def measure(url: str, pid: int, options: argparse.Namespace) -> None:
    async with connect(f"{url}/warm", subprotocols=OCPP) as link:
        boot = {"chargePointVendor": "bench", "chargePointModel": "b"}
        await call(link, "boot", "BootNotification", boot)
    before = rss_mb(pid)
    started = time.monotonic()
    frames = await flood(url, options.flood_mib)
    took = time.monotonic() - started
    after = rss_mb(pid)
    print(
        f"flood: {options.flood_mib} MiB in {frames} unsolicited CALLRESULTs ({took:.1f} s): "
        f"RSS {before:.0f} MB -> {after:.0f} MB ({after - before:+.0f} MB)"
    )
    for count in options.sampled_values:
        size, own, delay = await stall(url, count)
        print(
            f"MeterValues of {count} sampled values ({size / 1024:.0f} KiB): answered in "
            f"{own * 1000:.0f} ms; another charger's worst extra delay {delay * 1000:.0f} ms"
        )


def run(options: argparse.Namespace, workdir: Path) -> None:
    port = free_port()
    config = workdir / "config.toml"
    config.write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nunknown_chargers = "accept"\n'
        f"push_local_list = false\n[api]\nport = 0\n[files]\nport = 0\n"
        f'directory = "{workdir / "files"}"\n[store]\npath = "{workdir / "edge.db"}"\n'
    )
    log = workdir / "edge.log"
    command = [*shlex.split(options.edge_cmd), "--config", str(config)]
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_listening(port, server, log)
        asyncio.run(measure(f"ws://127.0.0.1:{port}/ocpp", server.pid, options))
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood-mib", type=int, default=28)
    parser.add_argument("--sampled-values", type=int, nargs="+", default=[1000])
    parser.add_argument(
        "--edge-cmd",
        default=f"{shlex.quote(sys.executable)} -m edge run",
        help="command that runs the edge in the foreground (--config FILE is appended)",
    )
    options = parser.parse_args()
    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="ocpp-bench-limits-") as directory:
        run(options, Path(directory))


if __name__ == "__main__":
    main()
