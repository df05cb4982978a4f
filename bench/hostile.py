"""Hostile devices on the site network, for the soak benchmark (bench/soak.py): each
attack is something a broken or malicious charger, an intruder on the site's LAN or a
careless client really sends. Runs in its own process so that its floods do not share
an event loop with the well-behaved chargers whose latency the soak measures; prints
one JSON object of counts on stdout when the time is up.

    python bench/hostile.py OCPP_URL API_URL FILES_URL CLOUD_URL CLOUD_TOKEN EDGE_ID SECONDS
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

SUBPROTOCOLS = [Subprotocol("ocpp1.6")]
# Chargers the soak registers as accepted before it starts: an accepted charger is the
# worst case, since everything it sends is acted upon.
FRAMES_CHARGER = "hostile-frames"
ANSWERS_CHARGER = "hostile-answers"
KNOWN_CARD = "50AC0001"  # a real card of the site, which intruders try to use
PAUSE_S = 0.2
# Every attack comes from this address (loopback's 127/8 reaches the daemon from any of
# them): the edge's limits per source address then hold the attacker, as on a site LAN,
# and not the soak's well-behaved chargers on 127.0.0.1.
SOURCE = "127.0.0.2"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def _open(url: str) -> ClientConnection:
    return await connect(
        url,
        subprotocols=SUBPROTOCOLS,
        open_timeout=10,
        max_size=None,
        ping_interval=None,
        local_addr=(SOURCE, 0),
    )


def _http(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=timeout, transport=httpx.AsyncHTTPTransport(local_address=SOURCE)
    )


async def _drain(connection: ClientConnection, seconds: float) -> int:
    """Read (and drop) what the server sends for `seconds`; how many frames."""
    frames = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                await connection.recv()
                frames += 1
    return frames


def _bad_frames() -> list[str | bytes]:
    """Frames no charger should send: each must get a CALLERROR or be dropped, and
    nothing of it may reach the store half-written or stop another charger."""
    many_values = [
        {"value": str(n), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
        for n in range(20_000)
    ]
    return [
        "not json at all",
        "[" * 100_000,
        '[2,"\\ud800","Heartbeat",{}]',
        '[2,"id-\\ud800x","Authorize",{"idTag":"\\udfff"}]',
        '[2,"nul-vendor","BootNotification",{"chargePointVendor":"Ve\\u0000ndor",'
        '"chargePointModel":"Mo\\u0000del"}]',
        '[2,"big-int","MeterValues",{"connectorId":99999999999999999999,"meterValue":[]}]',
        json.dumps(
            [
                2,
                "huge",
                "MeterValues",
                {
                    "connectorId": 1,
                    "meterValue": [{"timestamp": now_iso(), "sampledValue": many_values}],
                },
            ]
        ),
        json.dumps([2, "x" * 10_000, "Heartbeat", {}]),
        json.dumps([7, "wrong-type", "Heartbeat", {}]),
        json.dumps([2, "wrong-types", "StartTransaction", {"connectorId": "one", "idTag": 5}]),
        json.dumps(
            [
                2,
                "status-text",
                "StatusNotification",
                {
                    "connectorId": 1,
                    "errorCode": "OtherError",
                    "status": "Faulted",
                    "info": "\u0000" * 50,
                    "vendorErrorCode": "\ud7ff" * 50,
                },
            ]
        ),
        b"\x00\x01binary frame",
        json.dumps([3, "nobody-asked", {"status": "Accepted"}]),
        json.dumps([4, "nobody-asked", "RpcFrameworkError", "x", {}]),
    ]


async def frames_attack(ocpp_url: str, tally: Counter[str]) -> None:
    """An accepted charger sending malformed, oversized and poisoned frames."""
    try:
        connection = await _open(f"{ocpp_url}/{FRAMES_CHARGER}")
    except (OSError, WebSocketException):
        tally["frames: could not connect"] += 1
        return
    try:
        for frame in _bad_frames():
            await connection.send(frame)
            tally["frames: sent"] += 1
            await _drain(connection, 0.05)
    except ConnectionClosed as closed:
        tally[f"frames: closed by the edge ({closed.rcvd.code if closed.rcvd else '-'})"] += 1
    finally:
        await connection.close()


async def answers_attack(
    ocpp_url: str, api_url: str, tally: Counter[str], flood: int = 3000
) -> None:
    """An accepted charger that floods unsolicited results, then answers the edge's
    commands with codes OCPP 1.6 does not have and with answers of nearly 1 MiB."""
    try:
        connection = await _open(f"{ocpp_url}/{ANSWERS_CHARGER}")
    except (OSError, WebSocketException):
        tally["answers: could not connect"] += 1
        return
    try:
        boot = {"chargePointVendor": "Hostile", "chargePointModel": "Answers"}
        await connection.send(json.dumps([2, "boot", "BootNotification", boot]))
        for number in range(flood):
            await connection.send(json.dumps([3, f"u{number}", {"status": "Accepted"}]))
        tally["answers: unsolicited results"] += flood
        async with _http(15) as http:
            command = asyncio.create_task(
                http.post(
                    f"{api_url}/api/chargers/{ANSWERS_CHARGER}/commands/GetConfiguration",
                    json={},
                    params={"wait": 5},
                )
            )
            try:
                await _answer_badly(connection, tally)
            finally:
                try:
                    response = await command
                    tally[f"answers: local API said {response.status_code}"] += 1
                except httpx.HTTPError as error:
                    tally[f"answers: local API failed ({type(error).__name__})"] += 1
    except (ConnectionClosed, TimeoutError, ValueError) as error:
        tally[f"answers: ended ({type(error).__name__})"] += 1
    finally:
        await connection.close()


async def _answer_badly(connection: ClientConnection, tally: Counter[str]) -> None:
    """The edge's next three calls: GetConfiguration with ~1 MiB, the rest with a code
    OCPP 1.6 does not have."""
    async with asyncio.timeout(10):
        answered = 0
        while answered < 3:
            frame = json.loads(await connection.recv())
            if frame[0] != 2:
                continue
            answered += 1
            if frame[2] == "GetConfiguration":
                huge = [
                    {"key": f"Key{n}", "readonly": True, "value": "v" * 400} for n in range(2_000)
                ]
                await connection.send(json.dumps([3, frame[1], {"configurationKey": huge}]))
                tally["answers: ~1 MiB answer"] += 1
            else:
                await connection.send(json.dumps([4, frame[1], "RpcFrameworkError", "no", {}]))
                tally["answers: foreign error code"] += 1


async def intruder_attack(ocpp_url: str, tally: Counter[str], number: int) -> None:
    """A device nobody approved: a new id each time, trying a real card number."""
    try:
        connection = await _open(f"{ocpp_url}/intruder-{number}")
    except InvalidStatus as refused:
        tally[f"intruders: refused at the handshake ({refused.response.status_code})"] += 1
        return
    except (OSError, WebSocketException):
        tally["intruders: could not connect"] += 1
        return
    try:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("BootNotification", {"chargePointVendor": "Intruder", "chargePointModel": "X"}),
            ("Authorize", {"idTag": KNOWN_CARD}),
            (
                "StartTransaction",
                {"connectorId": 1, "idTag": KNOWN_CARD, "meterStart": 0, "timestamp": now_iso()},
            ),
        ]
        for index, (action, payload) in enumerate(calls):
            await connection.send(json.dumps([2, str(index), action, payload]))
            async with asyncio.timeout(10):
                answer = json.loads(await connection.recv())
            if answer[0] == 3 and action != "BootNotification":
                tally[f"intruders: {action} answered with a result"] += 1
            elif answer[0] == 4:
                tally[f"intruders: {action} refused ({answer[2]})"] += 1
    except (ConnectionClosed, TimeoutError, ValueError) as error:
        tally[f"intruders: ended ({type(error).__name__})"] += 1
    finally:
        await connection.close()


async def slowloris_attack(url: str, tally: Counter[str], sockets: int = 10) -> None:
    """Requests whose headers arrive a byte every second: they must be cut off."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    writers = []
    for _ in range(sockets):
        try:
            _, writer = await asyncio.open_connection(host, port, local_addr=(SOURCE, 0))
        except OSError:
            tally[f"slowloris {port}: refused"] += 1
            continue
        writer.write(b"GET /api/chargers HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        writers.append(writer)
    held = 0
    for _ in range(20):
        await asyncio.sleep(1)
        for writer in writers:
            if writer.is_closing():
                continue
            try:
                writer.write(b"X")
                await writer.drain()
                held += 1
            except OSError:
                writer.close()
    cut = sum(1 for writer in writers if writer.is_closing())
    tally[f"slowloris {port}: sockets cut within 20 s"] += cut
    tally[f"slowloris {port}: sockets still open after 20 s"] += len(writers) - cut
    for writer in writers:
        writer.close()


async def upload_attack(files_url: str, api_url: str, tally: Counter[str]) -> None:
    """Uploads from nobody in particular, and a body far larger than any request needs."""

    async def big_body() -> Any:
        chunk = b"\0" * 65536
        for _ in range(160):  # 10 MiB, without a Content-Length
            yield chunk

    async with _http(30) as http:
        for name in ("diagnostics.zip", "../../edge.db", "other-charger.log"):
            with contextlib.suppress(httpx.HTTPError):
                response = await http.put(f"{files_url}/uploads/{name}", content=b"x" * 4096)
                tally[f"uploads: anonymous PUT answered {response.status_code}"] += 1
        with contextlib.suppress(httpx.HTTPError):
            response = await http.put(f"{files_url}/uploads/flood.bin", content=big_body())
            tally[f"uploads: 10 MiB chunked answered {response.status_code}"] += 1
        with contextlib.suppress(httpx.HTTPError):
            response = await http.post(
                f"{api_url}/api/chargers/{FRAMES_CHARGER}/commands/Reset",
                content=b"type=Hard",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Origin": "http://evil.example",
                },
            )
            tally[f"local API: cross-site form post answered {response.status_code}"] += 1


async def cloud_attack(cloud_url: str, token: str, edge_id: str, tally: Counter[str]) -> None:
    """A fleet client without the token, and a command that makes the charger answer
    with nearly 1 MiB (which the cloud cannot store as one event)."""
    async with _http(15) as http:
        with contextlib.suppress(httpx.HTTPError):
            response = await http.post(f"{cloud_url}/api/edges/{edge_id}/enrollment-codes", json={})
            tally[f"cloud: enroll code without token answered {response.status_code}"] += 1
        with contextlib.suppress(httpx.HTTPError):
            response = await http.get(f"{cloud_url}/api/edges/%2B")
            tally[f"cloud: wildcard edge id answered {response.status_code}"] += 1
        with contextlib.suppress(httpx.HTTPError):
            response = await http.post(
                f"{cloud_url}/api/edges/{edge_id}/commands",
                json={
                    "charger_id": ANSWERS_CHARGER,
                    "action": "ocpp",
                    "arguments": {"action": "GetConfiguration", "arguments": {}},
                    "expires_in_s": 60,
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            tally[f"cloud: command to the hostile charger answered {response.status_code}"] += 1


async def run(options: argparse.Namespace) -> Counter[str]:
    tally: Counter[str] = Counter()
    deadline = time.monotonic() + options.seconds
    intruders = itertools.count()
    attacks: list[Callable[[], Awaitable[None]]] = [
        lambda: frames_attack(options.ocpp_url, tally),
        lambda: answers_attack(options.ocpp_url, options.api_url, tally),
        lambda: intruder_attack(options.ocpp_url, tally, next(intruders)),
        lambda: upload_attack(options.files_url, options.api_url, tally),
        lambda: cloud_attack(options.cloud_url, options.cloud_token, options.edge_id, tally),
    ]
    slow = [
        asyncio.create_task(_repeat(functools.partial(slowloris_attack, url, tally), deadline))
        for url in (options.api_url, options.files_url)
    ]
    for attack in itertools.cycle(attacks):
        if time.monotonic() >= deadline:
            break
        try:
            await attack()
        except Exception as error:  # an attack that broke is counted, the others go on
            tally[f"attack failed: {type(error).__name__}"] += 1
        tally["attacks"] += 1
        await asyncio.sleep(PAUSE_S)
    for task in slow:
        task.cancel()
    await asyncio.gather(*slow, return_exceptions=True)
    return tally


async def _repeat(attack: Callable[[], Awaitable[None]], deadline: float) -> None:
    while time.monotonic() < deadline:
        await attack()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("ocpp_url", "api_url", "files_url", "cloud_url", "cloud_token", "edge_id"):
        parser.add_argument(name)
    parser.add_argument("seconds", type=float)
    tally = asyncio.run(run(parser.parse_args()))
    sys.stdout.write(json.dumps(dict(sorted(tally.items()))) + "\n")


if __name__ == "__main__":
    main()
