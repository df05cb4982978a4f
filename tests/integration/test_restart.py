"""The daemon killed mid-transaction (SIGKILL) and started again: the charger's stop
closes the right transaction, and nothing acknowledged before the kill is lost."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port
from tests.ocpp_client import RawCharger


def start_daemon(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"daemon exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("daemon did not start listening")


async def test_stop_after_sigkill_and_restart_closes_the_right_transaction(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nunknown_chargers = "accept"\n'
        "push_local_list = false\n[api]\nport = 0\n[files]\nport = 0\n"
        f'[store]\npath = "{tmp_path / "edge.db"}"\n'
    )
    url = f"ws://127.0.0.1:{port}/ocpp"
    daemon = start_daemon(config)
    try:
        wait_listening(port, daemon)
        async with RawCharger(url, "CP1") as charger, RawCharger(url, "CP2") as other:
            await charger.boot()
            await other.boot()
            start = {"idTag": "CARD", "meterStart": 100, "timestamp": "2026-03-01T10:00:00Z"}
            mine = await charger.ok("StartTransaction", {"connectorId": 1, **start})
            theirs = await other.ok(
                "StartTransaction", {"connectorId": 1, **start, "idTag": "OTHER"}
            )
            acknowledged = 0
            for wh in range(200, 2200, 100):
                await charger.ok(
                    "MeterValues",
                    {
                        "connectorId": 1,
                        "transactionId": mine["transactionId"],
                        "meterValue": [
                            {
                                "timestamp": "2026-03-01T10:01:00Z",
                                "sampledValue": [{"value": str(wh)}],
                            }
                        ],
                    },
                )
                acknowledged += 1
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)
    finally:
        if daemon.poll() is None:
            daemon.kill()

    daemon = start_daemon(config)
    try:
        wait_listening(port, daemon)
        async with RawCharger(url, "CP1") as charger:
            # No BootNotification: the charger just carries on after reconnecting.
            await charger.ok(
                "StopTransaction",
                {
                    "transactionId": mine["transactionId"],
                    "meterStop": 2100,
                    "timestamp": "2026-03-01T10:30:00Z",
                },
            )
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()

    db = sqlite3.connect(tmp_path / "edge.db")
    rows = dict(db.execute("SELECT id, meter_stop_wh FROM transactions").fetchall())
    assert rows == {mine["transactionId"]: 2100, theirs["transactionId"]: None}
    stored = db.execute(
        "SELECT count(*) FROM meter_values WHERE transaction_id = ?", (mine["transactionId"],)
    ).fetchone()[0]
    assert stored == acknowledged
    assert db.execute("SELECT count(*) FROM unmatched_stops").fetchone()[0] == 0
    assert db.execute("SELECT connected FROM chargers WHERE id = 'CP1'").fetchone()[0] == 0
