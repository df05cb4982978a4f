"""Load generator: N chargers, each sending MeterValues as soon as its previous one is
answered (one call outstanding per charger, as OCPP-J requires). Runs in its own process
so that it does not share a core with the server; prints one JSON object on stdout.

    python bench/load.py URL CHARGERS [--seconds 10] [--warmup 2] [--server-pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

# Hundreds of simultaneous handshakes would time out before the server gets to them.
HANDSHAKES_AT_ONCE = 50
CALL_TIMEOUT_S = 30.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class CallFailed(Exception):
    """The answer was not the CALLRESULT of our call (a CALLERROR, another unique id)."""


@dataclass
class Charger:
    connection: ClientConnection
    ids: itertools.count[int] = field(default_factory=itertools.count)

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        unique_id = str(next(self.ids))
        # orjson gives bytes; text=True keeps them a text frame, as OCPP-J requires.
        await self.connection.send(orjson.dumps([2, unique_id, action, payload]), text=True)
        async with asyncio.timeout(CALL_TIMEOUT_S):
            reply = orjson.loads(await self.connection.recv(decode=False))
            while reply[0] == 2:
                # A call from the server: answer it so that it does not wait, then go on
                # waiting for ours.
                await self.connection.send(orjson.dumps([3, reply[1], {}]), text=True)
                reply = orjson.loads(await self.connection.recv(decode=False))
        if reply[0] != 3 or reply[1] != unique_id:
            raise CallFailed(f"{action} {unique_id} answered {str(reply)[:200]}")
        result: dict[str, Any] = reply[2]
        return result


@dataclass
class Tally:
    start: float
    end: float
    latencies: list[float] = field(default_factory=list)
    # Every answered MeterValues, warm-up included: the store must hold all of them.
    acknowledged: int = 0
    errors: int = 0
    reasons: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.errors += 1
        if len(self.reasons) < 5:
            self.reasons.append(reason)


def meter_values(transaction_id: int, wh: int) -> dict[str, Any]:
    sampled = [
        {
            "value": str(wh),
            "measurand": "Energy.Active.Import.Register",
            "unit": "Wh",
            "context": "Sample.Periodic",
        },
        {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
    ]
    return {
        "connectorId": 1,
        "transactionId": transaction_id,
        "meterValue": [{"timestamp": now_iso(), "sampledValue": sampled}],
    }


async def open_charger(url: str, number: int, gate: asyncio.Semaphore) -> tuple[Charger, int]:
    async with gate:
        connection = await connect(
            f"{url}/bench-{number}",
            subprotocols=[Subprotocol("ocpp1.6")],
            compression=None,
            open_timeout=60,
        )
        charger = Charger(connection)
        await charger.call(
            "BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "Load"}
        )
        started = await charger.call(
            "StartTransaction",
            {"connectorId": 1, "idTag": "BENCH", "meterStart": 0, "timestamp": now_iso()},
        )
    # The echo server answers {}: any id will do for it.
    return charger, int(started.get("transactionId", 1))


async def send_meter_values(
    charger: Charger, transaction_id: int, tally: Tally, rate: float = 0.0
) -> None:
    """MeterValues as fast as answered, or `rate` per second when it is not 0."""
    wh = 0
    next_at = time.perf_counter()
    while (sent := time.perf_counter()) < tally.end:
        if rate:
            next_at += 1.0 / rate
            await asyncio.sleep(max(0.0, next_at - sent))
            sent = time.perf_counter()
        wh += 10
        try:
            await charger.call("MeterValues", meter_values(transaction_id, wh))
        except CallFailed as error:
            tally.fail(str(error))
            continue
        except (TimeoutError, ConnectionClosed) as error:
            tally.fail(f"MeterValues: {error!r}; this charger stopped")
            return
        answered = time.perf_counter()
        tally.acknowledged += 1
        # Throughput counts the answers that arrive inside the window.
        if tally.start <= answered <= tally.end:
            tally.latencies.append(answered - sent)


async def run(
    url: str, chargers: int, seconds: float, warmup: float, pid: int, rate: float = 0.0
) -> dict[str, Any]:
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    setup_start = time.perf_counter()
    try:
        opened = await asyncio.gather(*(open_charger(url, n, gate) for n in range(chargers)))
    except Exception as error:
        sys.exit(f"a charger could not connect, boot and start: {error!r}")
    now = time.perf_counter()
    tally = Tally(start=now + warmup, end=now + warmup + seconds)
    tasks = [asyncio.create_task(send_meter_values(c, tid, tally, rate)) for c, tid in opened]
    await asyncio.sleep(tally.end - time.perf_counter())
    rss = rss_mb(pid) if pid else None
    await asyncio.gather(*tasks)
    await asyncio.gather(*(charger.connection.close() for charger, _ in opened))
    latencies = sorted(tally.latencies)

    def percentile_ms(fraction: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(len(latencies) * fraction))] * 1000

    return {
        "chargers": chargers,
        "setup_s": round(now - setup_start, 2),
        "messages": len(latencies),
        "elapsed_s": seconds,
        "rate": len(latencies) / seconds,
        "p50_ms": percentile_ms(0.50),
        "p99_ms": percentile_ms(0.99),
        "rss_mb": rss,
        "acknowledged": tally.acknowledged,
        "errors": tally.errors,
        "error_samples": tally.reasons,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="ws://127.0.0.1:PORT/ocpp")
    parser.add_argument("chargers", type=int)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--server-pid", type=int, default=0, help="report its VmRSS")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="MeterValues/s per charger (0: as fast as answered)"
    )
    arguments = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    options = arguments.url, arguments.chargers, arguments.seconds, arguments.warmup
    figures = asyncio.run(run(*options, arguments.server_pid, arguments.rate))
    sys.stdout.buffer.write(orjson.dumps(figures) + b"\n")


if __name__ == "__main__":
    main()
