"""Load generator: N chargers each sending MeterValues as fast as they are answered
(one call outstanding per charger, as OCPP-J requires). Prints one JSON line.

    python bench/load.py URL CHARGERS SECONDS [WARMUP]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import sys
import time
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

HANDSHAKES_AT_ONCE = 50


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Charger:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.ids = itertools.count()

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        unique_id = str(next(self.ids))
        await self.connection.send(json.dumps([2, unique_id, action, payload]))
        reply = json.loads(await self.connection.recv())
        if reply[0] != 3 or reply[1] != unique_id:
            raise RuntimeError(f"{action} answered {reply}")
        result: dict[str, Any] = reply[2]
        return result


async def run_charger(
    url: str,
    number: int,
    gate: asyncio.Semaphore,
    ready: asyncio.Barrier,
    start: asyncio.Event,
    window: list[float],
) -> tuple[int, list[float], int]:
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
    transaction_id = started.get("transactionId", 1)
    await ready.wait()
    await start.wait()
    latencies: list[float] = []
    acknowledged = errors = 0
    wh = 0
    while time.perf_counter() < window[1]:
        wh += 10
        payload = {
            "connectorId": 1,
            "transactionId": transaction_id,
            "meterValue": [
                {
                    "timestamp": now_iso(),
                    "sampledValue": [
                        {
                            "value": str(wh),
                            "measurand": "Energy.Active.Import.Register",
                            "unit": "Wh",
                            "context": "Sample.Periodic",
                        },
                        {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
                    ],
                }
            ],
        }
        sent = time.perf_counter()
        try:
            await charger.call("MeterValues", payload)
        except RuntimeError:
            errors += 1
            continue
        acknowledged += 1
        if sent >= window[0]:
            latencies.append(time.perf_counter() - sent)
    await connection.close()
    return acknowledged, latencies, errors


async def main(url: str, chargers: int, seconds: float, warmup: float) -> None:
    gate, start = asyncio.Semaphore(HANDSHAKES_AT_ONCE), asyncio.Event()
    ready = asyncio.Barrier(chargers + 1)
    window = [0.0, 0.0]
    tasks = [
        asyncio.create_task(run_charger(url, n, gate, ready, start, window))
        for n in range(chargers)
    ]
    # Measure once every charger is connected and has its transaction.
    await ready.wait()
    now = time.perf_counter()
    window[:] = [now + warmup, now + warmup + seconds]
    start.set()
    results = await asyncio.gather(*tasks)
    latencies = sorted(latency for _, measured, _ in results for latency in measured)
    print(
        json.dumps(
            {
                "chargers": chargers,
                "messages": len(latencies),
                "seconds": seconds,
                "rate": len(latencies) / seconds,
                "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else None,
                "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None,
                "acknowledged": sum(acknowledged for acknowledged, _, _ in results),
                "errors": sum(errors for _, _, errors in results),
            }
        )
    )


if __name__ == "__main__":
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    warmup = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), warmup))
