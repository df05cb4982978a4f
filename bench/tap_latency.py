"""How fast a tap becomes charging: from a card tap arriving at the edge to the
RemoteStartTransaction on the wire (the edge's part), and to the StartTransaction
accepted (with a charger's round trip), while 50 other chargers keep the edge busy.

The edge is the real daemon in its own process, with a real SQLite file and simulated
readers; the busy chargers are bench/load.py in another process. Taps arrive on the
daemon's tap socket, as a driver's tap from any reader does after its driver. The
limit beside each figure is measured in the same run on the same connections: a
Heartbeat's round trip, the least any exchange with the edge can take.

    python -m bench.tap_latency [--taps 1000] [--busy 50] [--busy-rate 2] [--tap-chargers 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocpp.v16.enums import Action
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from bench.processes import BENCH, free_port, log_tail, prepare_environment, stop, wait_listening
from edge.ocpp.library import on
from edge.simulator import SimulatedCharger, SimulatedChargerConfig

TARGET_P99_MS = 25.0  # tap to RemoteStartTransaction on the wire


class TimedCharger(SimulatedCharger):
    """The project's simulated charger, noting when the edge's commands arrive."""

    def __init__(self, *arguments: Any) -> None:
        super().__init__(*arguments)
        self.remote_starts: asyncio.Queue[float] = asyncio.Queue()
        self.remote_stops: asyncio.Queue[float] = asyncio.Queue()
        # Set once the edge has answered a StatusNotification saying Available.
        self.available = asyncio.Event()

    async def send_status(
        self, connector_id: int, status: str, error_code: str = "NoError"
    ) -> None:
        await super().send_status(connector_id, status, error_code)
        if status == "Available":
            self.available.set()

    @on(Action.remote_start_transaction)
    async def on_remote_start_transaction(self, **arguments: Any) -> Any:
        self.remote_starts.put_nowait(time.perf_counter())
        return await super().on_remote_start_transaction(**arguments)

    @on(Action.remote_stop_transaction)
    async def on_remote_stop_transaction(self, **arguments: Any) -> Any:
        self.remote_stops.put_nowait(time.perf_counter())
        return await super().on_remote_stop_transaction(**arguments)


@dataclass
class Figures:
    to_remote_start: list[float] = field(default_factory=list)
    to_start_accepted: list[float] = field(default_factory=list)
    to_remote_stop: list[float] = field(default_factory=list)
    heartbeat: list[float] = field(default_factory=list)


def card(number: int) -> str:
    return f"BE{number:06X}"


def write_config(workdir: Path, port: int, tap_chargers: int) -> Path:
    readers = "".join(
        f'[[readers]]\nid = "reader-{n}"\nkind = "simulated"\ncharger = "tap-{n}"\n'
        "connector = 1\ndebounce_seconds = 0\n"
        for n in range(1, tap_chargers + 1)
    )
    config = workdir / "config.toml"
    config.write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nunknown_chargers = "accept"\n'
        "heartbeat_interval = 300\npush_local_list = false\n"
        # Every charger here is on 127.0.0.1 and taps far faster than people do: the
        # per-address and per-connection limits would measure themselves, not the edge.
        "max_connections_per_address = 10000\nhandshakes_per_minute_per_address = 100000\n"
        "[ocpp.limits]\nframes_per_second = 100000\nframe_burst = 100000\n"
        f'[api]\nport = 0\n[files]\nport = 0\n[store]\npath = "{workdir / "edge.db"}"\n'
        f'[taps]\nsocket = "{workdir / "taps.sock"}"\n[log]\nlevel = "WARNING"\n' + readers
    )
    return config


def enrol_cards(config: Path, count: int) -> None:
    for number in range(1, count + 1):
        subprocess.run(
            [sys.executable, "-m", "edge", "cards", "add", card(number), "--config", str(config)],
            check=True,
            capture_output=True,
        )


async def tap_charger(
    url: str, number: int, socket_path: Path, taps: int, figures: Figures, ready: asyncio.Barrier
) -> None:
    """One charger with its reader: tap to start, tap again to stop, `taps` times."""
    charger_id, uid = f"tap-{number}", card(number)
    async with connect(f"{url}/{charger_id}", subprotocols=[Subprotocol("ocpp1.6")]) as link:
        charger = TimedCharger(charger_id, link, SimulatedChargerConfig(connectors=1))
        listener = asyncio.create_task(charger.start())
        await charger.boot()
        await charger.send_status(1, "Available")
        tap_in, tap_out = await asyncio.open_unix_connection(socket_path)
        line = f"reader-{number} {uid}\n".encode()

        async def tap() -> float:
            tapped = time.perf_counter()
            tap_out.write(line)
            await tap_out.drain()
            if await tap_in.readline() != b"ok\n":
                raise RuntimeError("the tap socket refused the tap")
            return tapped

        await ready.wait()
        for _ in range(taps):
            tapped = await tap()
            remote_start = await asyncio.wait_for(charger.remote_starts.get(), 10)
            await asyncio.wait_for(charger.started_transactions.get(), 10)
            accepted = time.perf_counter()
            figures.to_remote_start.append(remote_start - tapped)
            figures.to_start_accepted.append(accepted - tapped)
            sent = time.perf_counter()
            await charger.heartbeat()
            figures.heartbeat.append(time.perf_counter() - sent)
            # Wait for the charger's status to settle before the stop tap, as a driver would.
            await asyncio.sleep(0.01)
            charger.available.clear()
            tapped = await tap()
            remote_stop = await asyncio.wait_for(charger.remote_stops.get(), 10)
            figures.to_remote_stop.append(remote_stop - tapped)
            # The next driver taps once the connector is Available again (Finishing
            # refuses a start, as OCPP 1.6 has it), and the edge has heard so.
            await asyncio.wait_for(charger.available.wait(), 10)
        tap_out.close()
        listener.cancel()


def percentile_ms(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


async def run_taps(url: str, socket_path: Path, options: argparse.Namespace) -> Figures:
    figures = Figures()
    per_charger = -(-options.taps // options.tap_chargers)
    ready = asyncio.Barrier(options.tap_chargers)
    await asyncio.gather(
        *(
            tap_charger(url, n, socket_path, per_charger, figures, ready)
            for n in range(1, options.tap_chargers + 1)
        )
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description="Tap-to-charging latency of the edge.")
    parser.add_argument("--taps", type=int, default=1000, help="taps that start charging")
    parser.add_argument("--tap-chargers", type=int, default=10)
    parser.add_argument("--busy", type=int, default=50, help="other chargers sending MeterValues")
    parser.add_argument("--busy-rate", type=float, default=2.0, help="MeterValues/s each")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    options = parser.parse_args()
    prepare_environment()
    with tempfile.TemporaryDirectory(prefix="ocpp-bench-taps-") as directory:
        workdir = Path(directory)
        port = free_port()
        config = write_config(workdir, port, options.tap_chargers)
        enrol_cards(config, options.tap_chargers)
        log = workdir / "edge.log"
        with log.open("wb") as output:
            edge = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(config)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        load = None
        try:
            wait_listening(port, edge, log)
            url = f"ws://127.0.0.1:{port}/ocpp"
            if options.busy:
                busy = [str(options.busy), "--rate", str(options.busy_rate)]
                load = subprocess.Popen(
                    [sys.executable, str(BENCH / "load.py"), url, *busy, "--seconds", "3600"],
                    stdout=subprocess.DEVNULL,
                )
                time.sleep(3)  # the busy chargers connect and start
            started = time.perf_counter()
            try:
                figures = asyncio.run(run_taps(url, workdir / "taps.sock", options))
            except Exception:
                print(f"the taps did not complete; the edge's log ends:\n{log_tail(log)}")
                raise
            elapsed = time.perf_counter() - started
        finally:
            if load is not None:
                load.kill()
            stop(edge)
        if edge.returncode not in (0, -15):
            print(f"the edge exited with {edge.returncode}:\n{log_tail(log)}")
            return 1
    rows = [
        ("tap -> RemoteStartTransaction on the wire", figures.to_remote_start),
        ("tap -> StartTransaction accepted", figures.to_start_accepted),
        ("tap -> RemoteStopTransaction on the wire", figures.to_remote_stop),
        ("limit: Heartbeat round trip, same load", figures.heartbeat),
    ]
    print(
        f"\n{len(figures.to_remote_start)} start taps and as many stop taps in {elapsed:.1f} s, "
        f"{options.busy} busy chargers at {options.busy_rate:g} MeterValues/s each\n"
    )
    print(f"{'':<44} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for name, values in rows:
        print(
            f"{name:<44} {percentile_ms(values, 0.5):>7.1f} {percentile_ms(values, 0.99):>7.1f} "
            f"{max(values) * 1000:>7.1f}"
        )
    p99 = percentile_ms(figures.to_remote_start, 0.99)
    verdict = "" if p99 < TARGET_P99_MS else " MISSED"
    print(
        f"\np99 tap -> RemoteStartTransaction {p99:.1f} ms (target < {TARGET_P99_MS:.0f} ms)"
        + verdict
    )
    if options.json:
        summary = {
            name: {"p50_ms": percentile_ms(v, 0.5), "p99_ms": percentile_ms(v, 0.99)}
            for name, v in rows
        }
        options.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if not verdict else 1


if __name__ == "__main__":
    sys.exit(main())
