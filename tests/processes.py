"""The edge daemon and the aggregator as real processes, for tests that kill them with
SIGKILL or stop them as systemd would; and a storm of StatusNotifications whose every
acknowledged one is a known event the cloud must end up holding exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from edge.clock import utc_now_text
from tests.conftest import CLOUD_API_TOKEN
from tests.doubles.service_manager import NotifySocket
from tests.ports import free_port


class Daemon:
    """`python -m edge|cloud run --config FILE` in its own process; in `directory` (where
    its config's relative paths lead) and with `environment` instead of this one's, when
    given."""

    def __init__(
        self,
        module: str,
        config: Path,
        log: Path,
        *,
        directory: Path | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.module = module
        self.config = config
        self.log = log
        self.directory = directory
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "run", "--config", str(self.config)],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=self.environment,
            )

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-40:])


def service_environment(notify: NotifySocket) -> dict[str, str]:
    """This environment, with `notify` as the daemon's $NOTIFY_SOCKET: the test's own
    service variables (if it runs under systemd) are not the daemon's."""
    ours = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    environment = {name: value for name, value in os.environ.items() if name not in ours}
    return environment | {"NOTIFY_SOCKET": notify.address}


class EdgeService:
    """`python -m edge run --config DIRECTORY/edge.toml` as systemd runs it: started in
    DIRECTORY, its $NOTIFY_SOCKET bound by the test, its output in DIRECTORY/edge.log and
    its store DIRECTORY/edge.db (unless its config says otherwise)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.database = directory / "edge.db"
        self.log = directory / "edge.log"
        self.notify = NotifySocket(f"@ocpp-edge-test-{uuid.uuid4().hex}")
        self.daemon = Daemon(
            "edge",
            directory / "edge.toml",
            self.log,
            directory=directory,
            environment=service_environment(self.notify),
        )

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.daemon.process

    def start_with_config(self, config: str) -> None:
        """Write `config` (TOML) as its config file and start it."""
        self.daemon.config.write_text(config)
        self.daemon.start()

    async def ready(self, within: float = 60.0) -> None:
        """READY=1: the OCPP server listens, every part is started. No thread waits for the
        process to end (ten daemons starting together would fill the default executor the
        in-process aggregator commits through), and no receive is cut short by a timeout
        (a datagram arriving as it is cancelled is lost)."""
        process = self.daemon.process
        assert process is not None
        waiting = asyncio.create_task(
            self.notify.until(lambda n: n.fields.get("READY") == "1", within=within)
        )
        while not waiting.done() and process.poll() is None:
            await asyncio.wait([waiting], timeout=0.5)
        if not waiting.done() or waiting.exception() is not None:
            waiting.cancel()
            pytest.fail(f"the edge in {self.directory.name}/ did not start:\n{self.tail()}")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.database, timeout=10)) as connection:
            return list(connection.execute(sql, params))

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines())

    def tail(self) -> str:
        return "\n".join(self.lines()[-30:])

    def close(self) -> None:
        self.daemon.kill()
        self.notify.close()


def edge_daemon(directory: Path, edge_id: str, broker_port: int) -> tuple[Daemon, int, Path]:
    """An edge that accepts any charger and syncs to the broker; (daemon, OCPP port, db)."""
    directory.mkdir(parents=True, exist_ok=True)
    port, database = free_port(), directory / "edge.db"
    config = directory / "edge.toml"
    config.write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nunknown_chargers = "accept"\n'
        "push_local_list = false\nheartbeat_interval = 300\n"
        f'[store]\npath = "{database}"\n[api]\nport = 0\n[files]\nport = 0\n'
        f'directory = "{directory / "files"}"\n[log]\nlevel = "INFO"\n'
        f'[sync]\nedge_id = "{edge_id}"\nbroker_host = "127.0.0.1"\nbroker_port = {broker_port}\n'
        "keepalive = 5\nack_timeout = 2.0\n"
    )
    return Daemon("edge", config, directory / "edge.log"), port, database


def cloud_daemon(
    directory: Path, store_url: str, broker_port: int, client_id: str = ""
) -> tuple[Daemon, int]:
    """An aggregator on `store_url`; (daemon, API port)."""
    directory.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    config = directory / "cloud.toml"
    config.write_text(
        f'[store]\nurl = "{store_url}"\n'
        f'[mqtt]\nbroker_host = "127.0.0.1"\nbroker_port = {broker_port}\nkeepalive = 5\n'
        f'client_id = "{client_id}"\n'
        f'[api]\nport = {api_port}\ntoken = "{CLOUD_API_TOKEN}"\n'
        f'[firmware]\ndirectory = "{directory / "firmware"}"\n'
        f'signing_key = "{directory.parent / "fleet.key"}"\n'
    )
    return Daemon("cloud", config, directory / "cloud.log"), api_port


def wait_for_port(port: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def outbox_size(database: Path) -> int:
    with sqlite3.connect(database, timeout=10) as connection:
        return int(connection.execute("SELECT count(*) FROM outbox").fetchone()[0])


# A storm charger gives up when the edge has not answered for this long.
GIVE_UP_SECONDS = 30.0


@dataclass
class Storm:
    """StatusNotifications from many chargers, each carrying a unique marker in `info`.
    `acknowledged` holds the markers the edge answered: each is committed on the edge
    with its `charger.status` event."""

    url: str
    chargers: int
    per_charger: int
    acknowledged: set[str] = field(default_factory=set)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        await asyncio.gather(*(self._charger(n, stop) for n in range(self.chargers)))

    async def _charger(self, number: int, stop: asyncio.Event | None) -> None:
        charger_id = f"storm-{number}"
        sent = 0
        failing_since: float | None = None
        while sent < self.per_charger and not (stop and stop.is_set()):
            if failing_since is not None and time.monotonic() - failing_since > GIVE_UP_SECONDS:
                raise RuntimeError(f"the edge stopped answering {charger_id} for good")
            try:
                async with connect(
                    f"{self.url}/{charger_id}",
                    subprotocols=[Subprotocol("ocpp1.6")],
                    open_timeout=5,
                ) as link:
                    failing_since = None
                    while sent < self.per_charger and not (stop and stop.is_set()):
                        marker = f"{charger_id}:{sent}"
                        # Each marker is sent once: answered or not, the next one is new.
                        sent += 1
                        status = "Available" if sent % 2 else "Unavailable"
                        payload = {
                            "connectorId": 1,
                            "errorCode": "NoError",
                            "status": status,
                            "info": marker,
                            "timestamp": utc_now_text(),
                        }
                        await link.send(_frame(marker, payload))
                        async with asyncio.timeout(10):
                            answer = await link.recv()
                        if isinstance(answer, str) and answer.startswith("[3,"):
                            self.acknowledged.add(marker)
            except (OSError, ConnectionClosed, TimeoutError):
                # The edge went away (killed): come back when it is up again.
                failing_since = failing_since or time.monotonic()
                await asyncio.sleep(0.2)


def _frame(unique_id: str, payload: dict[str, object]) -> str:
    return json.dumps([2, unique_id, "StatusNotification", payload])
