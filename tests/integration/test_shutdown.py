"""Stopping is prompt whatever the daemon is doing. `ocpp-edge run` and `ocpp-cloud run`
run as real processes, are brought into a state (the broker frozen, an upload half-sent,
a command waiting for a charger that never answers, a boot storm...) and sent SIGTERM or
SIGINT (the demo chargers with each kind of cloud link: test_prompt_stop.py). Each must
tell systemd STOPPING=1 at once, exit 0 within 5 s with a last log line saying it
stopped, and keep in its store everything it acknowledged. A second signal, or a stop that overruns
`[service] stop_timeout`, ends it at once with a line naming what had not stopped."""

from __future__ import annotations

import asyncio
import ftplib
import io
import json
import re
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from cloud.firmware import public_key_text
from cloud.store.schema import events
from contract import protocol as wire
from edge.files.store import FileDirectory
from edge.files.tokens import UploadTokens
from edge.store.database import open_database
from tests.conftest import RunningCloud, StartCloud
from tests.doubles.serial_pty import rdm6300_frame, serial_pty
from tests.doubles.service_manager import NotifySocket
from tests.mosquitto import Mosquitto
from tests.ocpp_client import RawCharger, now_iso
from tests.ports import free_port
from tests.processes import EdgeService, cloud_daemon, wait_for_port
from tests.waiting import eventually

STOP_WITHIN = 5.0
# STOPPING=1 reaches systemd this soon after the signal.
STOPPING_WITHIN = 1.0
EDGE_ID = "site-stop"
# The daemon's last line after a clean stop, and after a forced one.
STOPPED = re.compile(r" INFO [\w.]+: stopped\b")
FORCED = "stopped without finishing; still running:"


# -- the edge daemon as systemd runs it ---------------------------------------------------


def toml(sections: dict[str, Any]) -> str:
    """TOML for `sections`: tables of scalars, and lists of tables ([[readers]])."""

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int | float):
            return str(item)
        if isinstance(item, list):
            return "[" + ", ".join(value(each) for each in item) + "]"
        return json.dumps(str(item))

    lines: list[str] = []
    for name, body in sections.items():
        tables = body if isinstance(body, list) else [body]
        for table in tables:
            lines.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            lines += [f"{key} = {value(item)}" for key, item in table.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Stopped:
    seconds: float | None  # None: still running after 15 s (then killed)
    status: int | None
    stopping_after: float | None  # None: no STOPPING=1


class EdgeDaemon(EdgeService):
    """The edge as systemd runs it, accepting any charger, its settings built by the case."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.ocpp_port = free_port()
        self.files = directory / "files"
        self.sections: dict[str, Any] = {
            "ocpp": {
                "host": "127.0.0.1",
                "port": self.ocpp_port,
                "unknown_chargers": "accept",
                "push_local_list": False,
                "heartbeat_interval": 300,
            },
            "store": {"path": str(self.database)},
            "api": {"port": 0},
            "files": {"port": 0, "directory": str(self.files)},
            "log": {"level": "INFO"},
        }

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ocpp_port}/ocpp"

    def start(self, sections: dict[str, Any]) -> None:
        """Start it with `sections` merged over its own."""
        for name, values in sections.items():
            merged = self.sections.get(name)
            self.sections[name] = merged | values if isinstance(merged, dict) else values
        self.start_with_config(toml(self.sections))

    async def stop(self, number: int) -> Stopped:
        return await _signal_and_wait(self.process, number, self.notify)


async def _signal_and_wait(
    process: subprocess.Popen[bytes] | None, number: int, notify: NotifySocket | None
) -> Stopped:
    """Send `number`; how long until STOPPING=1 and until the process exited."""
    assert process is not None
    sent = time.monotonic()

    def wait() -> float | None:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None
        return time.monotonic() - sent

    process.send_signal(number)
    exited = asyncio.create_task(asyncio.to_thread(wait))
    stopping_after = None
    if notify is not None:
        try:
            await notify.until(lambda n: n.fields.get("STOPPING") == "1", within=STOP_WITHIN)
            stopping_after = time.monotonic() - sent
        except TimeoutError:
            pass
    seconds = await exited
    return Stopped(seconds, None if seconds is None else process.returncode, stopping_after)


def assert_stopped_cleanly(stopped: Stopped, lines: list[str], tail: str) -> None:
    assert stopped.seconds is not None, f"still running 15 s after the signal:\n{tail}"
    assert stopped.seconds < STOP_WITHIN, f"took {stopped.seconds:.1f} s:\n{tail}"
    assert stopped.status == 0, tail
    assert STOPPED.search(lines[-1]), tail


# -- chargers ------------------------------------------------------------------------------


class MuteCharger:
    """A charger that sends the CALLs a test writes and never answers the edge's own:
    those are kept in `calls`, in order."""

    def __init__(self, charger: RawCharger) -> None:
        assert charger.connection is not None
        self.connection = charger.connection
        self.calls: list[list[Any]] = []

    async def answered(self, action: str, payload: dict[str, Any]) -> Any:
        """Send a CALL; its CALLRESULT payload."""
        unique_id = uuid.uuid4().hex
        await self.connection.send(json.dumps([2, unique_id, action, payload]))
        async with asyncio.timeout(10):
            while True:
                frame = await self._receive()
                if frame[1] == unique_id:
                    assert frame[0] == 3, f"{action} answered {frame}"
                    return frame[2]

    async def next_call(self) -> list[Any]:
        """The oldest CALL from the edge not yet looked at."""
        async with asyncio.timeout(10):
            while not self.calls:
                await self._receive()
        return self.calls.pop(0)

    async def _receive(self) -> list[Any]:
        frame = list(json.loads(await self.connection.recv()))
        if frame[0] == 2:
            self.calls.append(frame)
        return frame


async def mute_charger(stack: AsyncExitStack, url: str, charger_id: str) -> MuteCharger:
    charger = MuteCharger(await stack.enter_async_context(RawCharger(url, charger_id)))
    boot = {"chargePointVendor": "TestVendor", "chargePointModel": "T1"}
    await charger.answered("BootNotification", boot)
    return charger


@dataclass
class Charged:
    """A transaction whose meter values the edge answered: they must be in its store."""

    charger: MuteCharger
    transaction_id: int
    readings: list[int]


async def charge(stack: AsyncExitStack, url: str, charger_id: str) -> Charged:
    """Boot, start a transaction, send three readings; the charger stays connected."""
    charger = await mute_charger(stack, url, charger_id)
    started = await charger.answered(
        "StartTransaction",
        {"connectorId": 1, "idTag": "CARD1", "meterStart": 1000, "timestamp": now_iso()},
    )
    readings = [1100, 1200, 1300]
    for wh in readings:
        reading = {"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
        await charger.answered(
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": started["transactionId"],
                "meterValue": [{"timestamp": now_iso(), "sampledValue": [reading]}],
            },
        )
    return Charged(charger, started["transactionId"], readings)


def assert_kept(edge: EdgeDaemon, charged: Charged) -> None:
    stored = edge.query(
        "SELECT wh FROM meter_values WHERE transaction_id = ? ORDER BY id",
        (charged.transaction_id,),
    )
    assert [row[0] for row in stored] == charged.readings


@dataclass
class BootStorm:
    """Chargers that connect, boot, send three StatusNotifications (each with a marker
    in `info`) and connect again, until stopped. `acknowledged` holds the markers the
    edge answered: each has its charger.status event in the outbox."""

    url: str
    chargers: int
    acknowledged: set[str] = field(default_factory=set)
    boots: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        await asyncio.gather(*(self._charger(number) for number in range(self.chargers)))

    async def _charger(self, number: int) -> None:
        charger_id, sent = f"storm-{number}", 0
        while not self.stop.is_set():
            try:
                async with connect(
                    f"{self.url}/{charger_id}",
                    subprotocols=[Subprotocol("ocpp1.6")],
                    open_timeout=5,
                    close_timeout=1,
                ) as link:
                    boot = {"chargePointVendor": "Storm", "chargePointModel": "S"}
                    await link.send(json.dumps([2, f"b{sent}", "BootNotification", boot]))
                    async with asyncio.timeout(10):
                        if str(await link.recv()).startswith("[3,"):
                            self.boots += 1
                    for _ in range(3):
                        marker = f"{charger_id}:{sent}"
                        sent += 1
                        status = {
                            "connectorId": 1,
                            "errorCode": "NoError",
                            "status": "Available" if sent % 2 else "Unavailable",
                            "info": marker,
                            "timestamp": now_iso(),
                        }
                        await link.send(json.dumps([2, marker, "StatusNotification", status]))
                        async with asyncio.timeout(10):
                            if str(await link.recv()).startswith("[3,"):
                                self.acknowledged.add(marker)
            except (OSError, WebSocketException, TimeoutError):
                await asyncio.sleep(0.05)  # the edge is going or gone


def outbox_markers(edge: EdgeDaemon) -> set[str]:
    rows = edge.query("SELECT data FROM outbox WHERE kind = 'charger.status'")
    return {json.loads(row[0]).get("info") for row in rows}


# -- what each case brings the edge into ----------------------------------------------------

Check = Callable[[], Awaitable[None]]


@dataclass
class Context:
    edge: EdgeDaemon
    broker: Mosquitto
    start_cloud: StartCloud
    stack: AsyncExitStack
    tmp_path: Path


def sync_to(host: str, port: int, **more: Any) -> dict[str, Any]:
    return {
        "sync": {
            "edge_id": EDGE_ID,
            "broker_host": host,
            "broker_port": port,
            "keepalive": 5,
            "ack_timeout": 2.0,
        }
        | more
    }


async def assert_acknowledged_are_in_the_cloud(edge: EdgeDaemon, cloud: RunningCloud) -> None:
    """Events the edge forgot (acknowledged) are in the cloud; the rest still in its outbox."""
    acked = edge.query("SELECT acked_seq FROM sync_state")[0][0]
    with cloud.engine.connect() as connection:
        stored = connection.execute(
            select(func.count())
            .select_from(events)
            .where(events.c.edge_id == EDGE_ID, events.c.seq <= acked)
        ).scalar_one()
    assert stored == acked
    kept = edge.query("SELECT min(seq) FROM outbox")[0][0]
    assert kept is None or kept == acked + 1


async def broker_frozen_with_events_unacknowledged(context: Context) -> Check:
    edge, broker = context.edge, context.broker
    cloud = await context.start_cloud(broker)
    edge.start(sync_to("127.0.0.1", broker.port))
    await edge.ready()
    charged = await charge(context.stack, edge.url, "CP-1")
    await eventually(lambda: edge.query("SELECT count(*) FROM outbox")[0][0] == 0, within=20)
    assert broker.process is not None
    broker.process.send_signal(signal.SIGSTOP)  # connected, but nothing answers any more
    context.stack.callback(broker.process.send_signal, signal.SIGCONT)
    status = {
        "connectorId": 1,
        "errorCode": "NoError",
        "status": "Charging",
        "timestamp": now_iso(),
    }
    await charged.charger.answered("StatusNotification", status)

    async def check() -> None:
        assert_kept(edge, charged)
        assert edge.query("SELECT count(*) FROM outbox WHERE kind = 'charger.status'")[0][0] == 1
        await assert_acknowledged_are_in_the_cloud(edge, cloud)

    return check


async def boot_storm_without_the_aggregator(context: Context) -> Check:
    edge = context.edge
    # All 60 chargers come from 127.0.0.1: lift the per-address admission limits, which
    # would otherwise pace the storm (a busy machine then never reaches the state below).
    one_address = {
        "handshakes_per_minute_per_address": 100_000,
        "max_connections_per_address": 1000,
    }
    edge.start(sync_to("127.0.0.1", context.broker.port) | {"ocpp": one_address})  # no aggregator
    await edge.ready()
    storm = BootStorm(edge.url, chargers=60)
    running = asyncio.create_task(storm.run())

    async def stop_storm() -> None:
        storm.stop.set()
        await asyncio.wait_for(running, timeout=20)

    context.stack.push_async_callback(stop_storm)
    await eventually(lambda: len(storm.acknowledged) >= 300 and storm.boots >= 120, within=60)

    async def check() -> None:
        await stop_storm()
        assert storm.acknowledged <= outbox_markers(edge)

    return check


async def command_waiting_for_a_mute_charger(context: Context) -> Check:
    edge = context.edge
    edge.start({"ocpp": {"push_local_list": True}})
    await edge.ready()
    charged = await charge(context.stack, edge.url, "CP-1")
    # CP-1 answers nothing of what the edge asks: its local list is being pushed (the
    # push starts by reading its local-list keys).
    assert (await charged.charger.next_call())[2] == "GetConfiguration"

    async def check() -> None:
        assert_kept(edge, charged)
        # The stop closed the connection the answer would have come on: recorded so.
        asked = "SELECT outcome FROM commands WHERE action = 'GetConfiguration'"
        assert edge.query(asked) == [("offline",)]

    return check


async def api_request_waiting_for_a_mute_charger(context: Context) -> Check:
    edge = context.edge
    api_port = free_port()
    edge.start({"api": {"port": api_port}})
    await edge.ready()
    charged = await charge(context.stack, edge.url, "CP-1")
    client = await context.stack.enter_async_context(
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30)
    )
    request = asyncio.create_task(
        client.post("/api/chargers/CP-1/commands/Reset?wait=30", json={"type": "Soft"})
    )
    context.stack.push_async_callback(_cancelled, request)
    assert (await charged.charger.next_call())[2] == "Reset"

    async def check() -> None:
        assert_kept(edge, charged)
        assert edge.query("SELECT outcome FROM commands WHERE action = 'Reset'") == [("offline",)]
        # The client heard the end of its request, rather than waiting 30 s.
        done, _ = await asyncio.wait([request], timeout=2)
        assert done

    return check


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def file_server_upload_and_download_under_way(context: Context) -> Check:
    edge = context.edge
    files_port = free_port()
    image = context.tmp_path / "big.bin"
    image.write_bytes(bytes(range(256)) * 32 * 1024)  # 8 MiB: more than the socket buffers
    database = open_database(edge.database)
    try:
        FileDirectory(edge.files).add_firmware(database, image)
    finally:
        database.conn.close()
    edge.start({"files": {"port": files_port, "host": "127.0.0.1"}})
    await edge.ready()
    charged = await charge(context.stack, edge.url, "CP-1")
    base = f"http://127.0.0.1:{files_port}"
    # The location the edge would hand CP-1 in a GetDiagnostics (the daemon made the key).
    token = UploadTokens.load_or_create(edge.files).issue("CP-1", 3600)
    async with httpx.AsyncClient(base_url=base) as client:
        answer = await client.put(f"/uploads/{token}/whole.log", content=b"a whole log\n" * 100)
        assert answer.status_code == 201
    # A charger's upload, cut off half-way through its body.
    _, uploading = await asyncio.open_connection("127.0.0.1", files_port)
    context.stack.callback(uploading.close)
    head = (
        f"PUT /uploads/{token}/half.log HTTP/1.1\r\nHost: edge\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    uploading.write(head + b"x" * 100_000)
    await uploading.drain()
    folder = edge.files / "uploads" / "CP-1"

    def receiving() -> bool:
        # Its partial file exists once the upload is admitted (written in large chunks).
        return any(folder.glob(".half.log.*.part"))

    await eventually(receiving, within=10)
    # A charger downloading firmware, slowly: it stops reading after the first bytes.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.setblocking(False)
    await asyncio.get_running_loop().sock_connect(slow, ("127.0.0.1", files_port))
    downloading_reader, downloading = await asyncio.open_connection(sock=slow)
    context.stack.callback(downloading.close)
    downloading.write(b"GET /firmware/big.bin HTTP/1.1\r\nHost: edge\r\n\r\n")
    assert (await downloading_reader.readline()).startswith(b"HTTP/1.1 200")

    async def check() -> None:
        assert_kept(edge, charged)
        received = edge.query("SELECT name, via FROM received_files")
        assert received == [("whole.log", "http")]
        assert not (folder / "half.log").exists()

    return check


async def ftp_upload_under_way(context: Context) -> Check:
    edge = context.edge
    ftp_port = free_port()
    edge.start({"files": {"host": "127.0.0.1", "ftp_port": ftp_port}})
    await edge.ready()
    charged = await charge(context.stack, edge.url, "CP-1")
    # The login the edge would hand CP-1 in a GetDiagnostics (the daemon made the key).
    token = UploadTokens.load_or_create(edge.files).issue("CP-1", 3600)

    def upload() -> tuple[ftplib.FTP, socket.socket]:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", ftp_port, timeout=10)
        ftp.login("CP-1", token)
        ftp.storbinary("STOR whole.txt", io.BytesIO(b"a whole report\n" * 1000))
        half = ftp.transfercmd("STOR half.txt")
        half.sendall(b"x" * 100_000)  # and no more: the upload is under way
        return ftp, half

    ftp, half = await asyncio.to_thread(upload)
    context.stack.callback(ftp.close)
    context.stack.callback(half.close)
    folder = edge.files / "uploads" / "CP-1"
    # Its partial file exists once the upload is admitted (written in large chunks).
    await eventually(lambda: any(folder.glob(".half.txt.*.part")), within=10)

    async def check() -> None:
        assert_kept(edge, charged)
        assert edge.query("SELECT name, via FROM received_files") == [("whole.txt", "ftp")]
        assert not (folder / "half.txt").exists(), "a half-received upload is not kept as if whole"

    return check


async def readers_of_every_kind_open_or_failing(context: Context) -> Check:
    edge = context.edge
    gate = context.stack.enter_context(serial_pty())
    readers: list[dict[str, Any]] = [
        {"id": "door", "kind": "simulated", "charger": "CP-1"},
        {"id": "gate", "kind": "serial", "port": gate.path, "protocol": "rdm6300"},
        {"id": "gone", "kind": "serial", "port": str(context.tmp_path / "ttyGONE")},
        {"id": "usb-nfc", "kind": "nfc", "device": "usb"},
        {"id": "udp-nfc", "kind": "nfc", "device": f"udp:127.0.0.1:{free_port()}"},
        {"id": "spi", "kind": "rc522", "spi_bus": 9, "spi_device": 0},
        {"id": "wedge", "kind": "keyboard", "device": str(context.tmp_path / "event99")},
    ]
    for reader in readers:
        reader.setdefault("charger", "CP-1")
    edge.start({"readers": readers})
    await edge.ready()
    charged = await charge(context.stack, edge.url, "CP-1")
    for failing in ("gone", "usb-nfc", "spi", "wedge"):
        await eventually(partial(edge.logged, f"reader {failing} ("), within=20)
    gate.send(rdm6300_frame(b"\x12\x34\x56\x78"))
    tapped = "SELECT count(*) FROM card_decisions WHERE reader_id = 'gate'"
    await eventually(lambda: edge.query(tapped)[0][0] == 1, within=10)

    async def check() -> None:
        assert_kept(edge, charged)
        assert edge.query(tapped)[0][0] == 1

    return check


async def firmware_download_from_the_cloud_under_way(context: Context) -> Check:
    edge, broker = context.edge, context.broker
    # Small chunks: the image takes a while to come.
    cloud = await context.start_cloud(broker, limits={"max_payload_bytes": 16384})
    key = public_key_text(cloud.site.signing_key)
    edge.start(sync_to("127.0.0.1", broker.port, firmware_public_key=key))
    await edge.ready()
    image = bytes(range(256)) * 16 * 1024  # 4 MiB in 8 KiB chunks
    async with httpx.AsyncClient(base_url=cloud.api_url, headers=cloud.api_headers) as api:
        answer = await api.put(
            "/api/firmware/cp-3.0.bin", params={"version": "3.0", "target": "*/*"}, content=image
        )
        assert answer.status_code == 200, answer.text
        assert (await api.post(f"/api/edges/{EDGE_ID}/firmware/cp-3.0.bin")).status_code == 200
    partial = edge.files / "firmware" / ".cp-3.0.bin.part"
    await eventually(lambda: partial.exists() and partial.stat().st_size > 0, within=20)

    async def check() -> None:
        assert not (edge.files / "firmware" / "cp-3.0.bin").exists(), "not served half-received"
        assert partial.exists(), "kept, to resume from"

    return check


@dataclass(frozen=True)
class Case:
    arrange: Callable[[Context], Awaitable[Check]]
    signal: signal.Signals


CASES = [
    Case(broker_frozen_with_events_unacknowledged, signal.SIGTERM),
    Case(boot_storm_without_the_aggregator, signal.SIGINT),
    Case(command_waiting_for_a_mute_charger, signal.SIGTERM),
    Case(api_request_waiting_for_a_mute_charger, signal.SIGINT),
    Case(file_server_upload_and_download_under_way, signal.SIGTERM),
    Case(ftp_upload_under_way, signal.SIGINT),
    Case(readers_of_every_kind_open_or_failing, signal.SIGTERM),
    Case(firmware_download_from_the_cloud_under_way, signal.SIGINT),
]


@pytest.fixture
async def edge_daemon(tmp_path: Path) -> AsyncIterator[EdgeDaemon]:
    daemon = EdgeDaemon(tmp_path / "edge")
    yield daemon
    daemon.close()


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{case.arrange.__name__}-{case.signal.name}" for case in CASES]
)
async def test_the_edge_stops_within_5_seconds_whatever_it_is_doing(
    case: Case,
    edge_daemon: EdgeDaemon,
    broker: Mosquitto,
    start_cloud: StartCloud,
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        context = Context(edge_daemon, broker, start_cloud, stack, tmp_path)
        check = await case.arrange(context)
        stopped = await edge_daemon.stop(case.signal)
        assert_stopped_cleanly(stopped, edge_daemon.lines(), edge_daemon.tail())
        assert stopped.stopping_after is not None and stopped.stopping_after < STOPPING_WITHIN
        await check()


# -- when stopping takes too long ------------------------------------------------------------


async def test_a_second_signal_ends_the_edge_at_once_naming_what_had_not_stopped(
    edge_daemon: EdgeDaemon,
) -> None:
    api_port = free_port()
    edge_daemon.start({"api": {"port": api_port}})
    await edge_daemon.ready()
    async with AsyncExitStack() as stack:
        charger = await mute_charger(stack, edge_daemon.url, "CP-1")
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30)
        )
        request = asyncio.create_task(
            client.post("/api/chargers/CP-1/commands/Reset?wait=30", json={"type": "Soft"})
        )
        stack.push_async_callback(_cancelled, request)
        assert (await charger.next_call())[2] == "Reset"
        process = edge_daemon.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        await edge_daemon.notify.until(lambda n: n.fields.get("STOPPING") == "1")
        # The request is still in its grace period: a second signal ends it all.
        stopped = await _signal_and_wait(process, signal.SIGTERM, None)
    assert stopped.seconds is not None and stopped.seconds < 2.0, edge_daemon.tail()
    assert stopped.status == 1
    # The last words come from the signal thread: another thread may log after them.
    (last,) = [line for line in edge_daemon.lines() if f"SIGTERM again: {FORCED}" in line]
    assert "tasks " in last and "local-api (" in last


async def test_a_stop_overrunning_stop_timeout_ends_the_edge_naming_what_had_not_stopped(
    edge_daemon: EdgeDaemon,
) -> None:
    edge_daemon.start({"service": {"stop_timeout": 1}})
    await edge_daemon.ready()
    async with AsyncExitStack() as stack:
        charged = await charge(stack, edge_daemon.url, "CP-1")
        # Another program holds the store's write lock: the edge's next commit waits
        # for it on the event loop's thread (SQLite's busy timeout).
        holder = sqlite3.connect(edge_daemon.database, isolation_level=None, timeout=10)
        stack.callback(holder.close)
        holder.execute("BEGIN IMMEDIATE")
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
        await charged.charger.connection.send(json.dumps([2, "s1", "StatusNotification", status]))
        stopped = await edge_daemon.stop(signal.SIGTERM)
        holder.execute("ROLLBACK")
    # STOPPING=1 at once although the event loop was stuck, and the end 1 s later.
    assert stopped.stopping_after is not None and stopped.stopping_after < STOPPING_WITHIN
    assert stopped.seconds is not None and stopped.seconds < 3.0, edge_daemon.tail()
    assert stopped.status == 1
    (last,) = [line for line in edge_daemon.lines() if f"not stopped within 1 s: {FORCED}" in line]
    assert "main thread in StoreWriter._commit_batch" in last
    assert edge_daemon.query("PRAGMA integrity_check") == [("ok",)]
    assert_kept(edge_daemon, charged)


# -- the aggregator ---------------------------------------------------------------------------


class CloudDaemon:
    """`python -m cloud run` on a SQLite store, an MQTT client standing in for an edge."""

    def __init__(self, directory: Path, broker_port: int) -> None:
        self.store = directory / "cloud.db"
        self.daemon, self.api_port = cloud_daemon(directory, f"sqlite:///{self.store}", broker_port)
        self.broker_port = broker_port
        self.topics = wire.Topics(EDGE_ID)

    def start(self) -> None:
        self.daemon.start()
        wait_for_port(self.api_port, within=60)

    async def stop(self, number: int) -> Stopped:
        return await _signal_and_wait(self.daemon.process, number, None)

    def lines(self) -> list[str]:
        return self.daemon.log.read_text(errors="replace").splitlines()

    def stored_seqs(self) -> list[int]:
        with closing(sqlite3.connect(self.store, timeout=20)) as connection:
            rows = connection.execute(
                "SELECT seq FROM events WHERE edge_id = ? ORDER BY seq", (EDGE_ID,)
            )
            return [row[0] for row in rows]


def batch(seq: int) -> str:
    event = wire.Event(
        seq=seq,
        at="2026-01-01T00:00:00.000Z",
        data=wire.ChargerConnection(charger_id="CP-1", connected=True),
    )
    return wire.EventBatch(edge_id=EDGE_ID, events=[event]).model_dump_json()


async def acks_until(client: aiomqtt.Client, seq: int, acked: list[int]) -> None:
    async with asyncio.timeout(20):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            acked.append(wire.Ack.model_validate_json(message.payload).seq)
            if acked[-1] >= seq:
                return


@pytest.fixture
def cloud_process(tmp_path: Path, broker: Mosquitto) -> Iterator[CloudDaemon]:
    cloud = CloudDaemon(tmp_path / "cloud", broker.port)
    yield cloud
    cloud.daemon.kill()


async def test_the_aggregator_stops_within_5_seconds_with_the_broker_up(
    cloud_process: CloudDaemon,
) -> None:
    cloud_process.start()
    acked: list[int] = []
    async with aiomqtt.Client("127.0.0.1", cloud_process.broker_port, identifier="e1") as edge:
        await edge.subscribe(cloud_process.topics.ack, qos=1)
        await eventually(lambda: any("taking events" in line for line in cloud_process.lines()))
        await edge.publish(cloud_process.topics.events, batch(1), qos=1)
        await acks_until(edge, 1, acked)
        stopped = await cloud_process.stop(signal.SIGTERM)
    assert_stopped_cleanly(stopped, cloud_process.lines(), "\n".join(cloud_process.lines()[-30:]))
    assert cloud_process.stored_seqs() == [1]


async def test_the_aggregator_stops_within_5_seconds_with_the_broker_down(
    tmp_path: Path,
) -> None:
    cloud = CloudDaemon(tmp_path / "cloud", free_port())  # nothing listens there
    try:
        cloud.start()
        await eventually(lambda: any("unreachable" in line for line in cloud.lines()), within=20)
        stopped = await cloud.stop(signal.SIGINT)
    finally:
        cloud.daemon.kill()
    assert_stopped_cleanly(stopped, cloud.lines(), "\n".join(cloud.lines()[-30:]))


async def test_the_aggregator_stops_within_5_seconds_with_the_broker_frozen(
    cloud_process: CloudDaemon, broker: Mosquitto
) -> None:
    cloud_process.start()
    await eventually(lambda: any("taking events" in line for line in cloud_process.lines()))
    assert broker.process is not None
    broker.process.send_signal(signal.SIGSTOP)
    try:
        stopped = await cloud_process.stop(signal.SIGTERM)
    finally:
        broker.process.send_signal(signal.SIGCONT)
    assert_stopped_cleanly(stopped, cloud_process.lines(), "\n".join(cloud_process.lines()[-30:]))


async def test_the_aggregator_stops_within_5_seconds_while_a_batch_waits_for_its_store(
    cloud_process: CloudDaemon,
) -> None:
    cloud_process.start()
    acked: list[int] = []
    async with aiomqtt.Client("127.0.0.1", cloud_process.broker_port, identifier="e1") as edge:
        await edge.subscribe(cloud_process.topics.ack, qos=1)
        await eventually(lambda: any("taking events" in line for line in cloud_process.lines()))
        await edge.publish(cloud_process.topics.events, batch(1), qos=1)
        await acks_until(edge, 1, acked)
        # Another program holds the store's write lock: the next batch's commit waits
        # (in a worker thread) for SQLite's busy timeout, 10 s.
        with closing(sqlite3.connect(cloud_process.store, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            await edge.publish(cloud_process.topics.events, batch(2), qos=1)
            # The broker has it; its delivery to the aggregator has no event to await.
            await asyncio.sleep(0.5)
            stopped = await cloud_process.stop(signal.SIGTERM)
            holder.execute("ROLLBACK")
    lines = cloud_process.lines()
    assert_stopped_cleanly(stopped, lines, "\n".join(lines[-30:]))
    assert "not waiting for threads blocked in a call" in lines[-1]
    # Every acknowledged batch is stored; the one cut off was not acknowledged.
    assert acked == [1]
    assert set(acked) <= set(cloud_process.stored_seqs())
