"""Security profile 1: wrong Basic-auth logins, by the hundred, must not slow down the
chargers already connected (each wrong login used to cost a scrypt on the thread pool
the store's COMMIT also uses)."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.adversarial.bad_logins import basic
from tests.conftest import RunningEdge, StartEdge
from tests.integration.test_security_profiles import PASSWORD, set_password

BAD_LOGINS = 400
CONCURRENCY = 40
# Generous: a quiet edge answers in a few milliseconds on this 2-core machine.
P99_BOUND_SECONDS = 0.5


async def round_trip(connection: ClientConnection, number: int) -> float:
    """Seconds for one call to be answered; StatusNotification waits for its commit."""
    if number % 2:
        frame: list[Any] = [2, f"h{number}", "Heartbeat", {}]
    else:
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        frame = [2, f"s{number}", "StatusNotification", status]
    started = time.perf_counter()
    await connection.send(json.dumps(frame))
    reply = json.loads(await connection.recv())
    assert reply[0] == 3 and reply[1] == frame[1], reply
    return time.perf_counter() - started


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "count": len(ordered),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


async def flood_while_measuring(
    edge: RunningEdge, sources: list[str]
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    async with connect(
        f"{edge.url}/GOOD",
        subprotocols=[Subprotocol("ocpp1.6")],
        additional_headers=basic("GOOD", PASSWORD),
    ) as good:
        quiet = [await round_trip(good, number) for number in range(40)]
        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.adversarial.bad_logins",
            edge.url,
            "VICTIM",
            str(BAD_LOGINS),
            str(CONCURRENCY),
            *sources,
            stdout=asyncio.subprocess.PIPE,
        )
        finished = asyncio.ensure_future(attacker.communicate())
        loaded: list[float] = []
        number = 0
        while not finished.done():
            number += 1
            loaded.append(await round_trip(good, number))
            await asyncio.sleep(0.02)
        output, _ = await finished
    assert attacker.returncode == 0
    return summary(quiet), summary(loaded), json.loads(output)


@pytest.mark.parametrize(
    "sources",
    [["127.0.0.2"], [f"127.0.1.{host}" for host in range(1, 101)]],
    ids=["one-source", "hundred-sources"],
)
async def test_bad_logins_do_not_slow_other_chargers(
    start_edge: StartEdge, sources: list[str]
) -> None:
    edge = await start_edge(security_profile=1)
    set_password(edge, "GOOD")
    set_password(edge, "VICTIM")
    quiet, loaded, attack = await flood_while_measuring(edge, sources)
    print(f"\n{len(sources)} source(s): quiet {quiet}; under {BAD_LOGINS} bad logins {loaded}")
    print(f"attack outcomes: {attack}")
    assert sum(attack["outcomes"].values()) == BAD_LOGINS
    assert "opened" not in attack["outcomes"]
    assert loaded["p99_ms"] < 1000 * P99_BOUND_SECONDS, (quiet, loaded)
    assert not edge.task.done()


async def refused_status(url: str, charger_id: str, password: str, source: str) -> int:
    try:
        async with connect(
            f"{url}/{charger_id}",
            subprotocols=[Subprotocol("ocpp1.6")],
            additional_headers=basic(charger_id, password),
            local_addr=(source, 0),
        ):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_a_failed_login_makes_its_address_wait_without_a_hash(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(
        security_profile=1, password_backoff_seconds=30, password_backoff_max_seconds=60
    )
    set_password(edge, "CP1")
    checker = edge.server.passwords
    assert await refused_status(edge.url, "CP1", "wrong-password-0001", "127.0.0.7") == 401
    hashed = checker.checks_run
    # The same address, even with the right password, waits; no scrypt is run for it.
    for password in ("wrong-password-0002", PASSWORD):
        assert await refused_status(edge.url, "CP1", password, "127.0.0.7") == 429
    assert checker.checks_run == hashed
    # Another address is not held back by it.
    assert await refused_status(edge.url, "CP1", PASSWORD, "127.0.0.8") == 101


async def test_unknown_ids_are_refused_without_a_hash(start_edge: StartEdge) -> None:
    edge = await start_edge(security_profile=1, password_backoff_seconds=0)
    set_password(edge, "CP1")
    checker = edge.server.passwords
    hashed = checker.checks_run
    for charger_id in ("NOBODY-1", "NOBODY-2", "NOBODY-3"):
        assert await refused_status(edge.url, charger_id, PASSWORD, "127.0.0.9") == 401
    # A user name that is not the charger id is not worth a hash either.
    token = basic("CP2", PASSWORD)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"{edge.url}/CP1", subprotocols=[Subprotocol("ocpp1.6")], additional_headers=token
        ):
            pass
    assert refused.value.response.status_code == 401
    assert checker.checks_run == hashed
    assert await refused_status(edge.url, "CP1", PASSWORD, "127.0.0.9") == 101
    assert checker.checks_run == hashed + 1
