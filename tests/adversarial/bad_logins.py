"""Wrong Basic-auth logins against a running edge, from one or more loopback source
addresses, in a process of its own so that its work does not share the daemon's loop.

    python -m tests.adversarial.bad_logins URL CHARGER_ID COUNT CONCURRENCY SOURCE...

Prints one JSON object: how many attempts ended with which HTTP status (or exception).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import sys
import time
from collections import Counter

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def attempt(url: str, charger_id: str, number: int, source: str) -> str:
    try:
        async with connect(
            f"{url}/{charger_id}",
            subprotocols=[Subprotocol("ocpp1.6")],
            additional_headers=basic(charger_id, f"wrong-password-{number:06d}"),
            open_timeout=60,
            local_addr=(source, 0),
        ):
            return "opened"
    except InvalidStatus as refused:
        return str(refused.response.status_code)
    except Exception as error:  # counted by kind, whatever it is
        return type(error).__name__


async def main(url: str, charger_id: str, count: int, concurrency: int, sources: list[str]) -> None:
    outcomes: Counter[str] = Counter()
    numbers = iter(range(count))
    rotation = itertools.cycle(sources)
    started = time.monotonic()

    async def worker() -> None:
        for number in numbers:
            outcomes[await attempt(url, charger_id, number, next(rotation))] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    print(json.dumps({"outcomes": outcomes, "seconds": round(time.monotonic() - started, 2)}))


if __name__ == "__main__":
    url, charger_id, count, concurrency, *sources = sys.argv[1:]
    asyncio.run(main(url, charger_id, int(count), int(concurrency), sources))
