"""README's run command: with no config file the daemon runs a demo site."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port


def booted_chargers(database: Path) -> set[str]:
    if not database.exists():
        return set()
    try:
        with sqlite3.connect(database) as connection:
            rows = connection.execute(
                "SELECT c.id FROM chargers c JOIN connectors s ON s.charger_id = c.id "
                "WHERE c.last_boot_at IS NOT NULL AND s.connector_id = 2"
            ).fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return set()
    return {row[0] for row in rows}


def open_transactions(database: Path, charger_id: str) -> list[str]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT id_tag FROM transactions WHERE charger_id = ? AND stopped_at IS NULL",
            (charger_id,),
        ).fetchall()
    return [row[0] for row in rows]


def test_demo_site_starts_boots_three_chargers_and_stops_cleanly(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "OCPP_EDGE_OCPP__PORT": str(free_port()),
        "OCPP_EDGE_API__PORT": str(free_port()),
        "OCPP_EDGE_FILES__PORT": str(free_port()),
    }
    environment.pop("OCPP_EDGE_CONFIG", None)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge", "run"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while booted_chargers(tmp_path / "edge.db") != {"demo-1", "demo-2", "demo-3"}:
            assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
            assert time.monotonic() < deadline, "the demo chargers did not boot"
            time.sleep(0.1)
        # The banner's tap command starts charging at the demo reader's charger.
        tap = subprocess.run(
            [sys.executable, "-m", "edge", "tap", "demo-reader", "DE000301"],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert tap.returncode == 0, tap.stderr
        while not open_transactions(tmp_path / "edge.db", "demo-3"):
            assert time.monotonic() < deadline + 10, "the tap started no transaction"
            time.sleep(0.1)
        daemon.send_signal(signal.SIGTERM)
        output, errors = daemon.communicate(timeout=20)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, errors
    assert "demo site" in output and "ocpp-edge chargers" in output
    assert "ocpp-edge tap demo-reader DE000301" in output
    assert str(tmp_path / "edge.db") in output
    with sqlite3.connect(tmp_path / "edge.db") as connection:
        assert connection.execute("SELECT count(*) FROM id_tags").fetchone()[0] == 12
        assert connection.execute("SELECT sum(connected) FROM chargers").fetchone()[0] == 0
