"""The edge daemon as a systemd service: the unit file as systemd reads it (verify, the
security score, the low-port drop-in), and the real daemon reporting READY=1, STATUS=,
WATCHDOG=1 and STOPPING=1 to a notify socket the test binds, through systemd-python
and through its own socket code, with its log records reaching journald's socket as
entries that carry CHARGER_ID and TRANSACTION_ID."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contract.cli import BINDINGS_SWITCH
from edge.service import ServiceNotifier
from tests.doubles.service_manager import (
    JournalSocket,
    Notification,
    NotifySocket,
    namespaces_available,
)
from tests.mosquitto import free_port
from tests.ocpp_client import RawCharger, now_iso

UNITS = Path(__file__).resolve().parents[2] / "systemd"
UNIT = UNITS / "ocpp-edge.service"
LOW_PORT = UNITS / "ocpp-edge.service.d" / "low-port.conf.example"
# The paths the installer (the Ansible role) puts things at.
EXEC_START = "/opt/ocpp-edge/venv/bin/ocpp-edge run --config /etc/ocpp-edge/config.toml"
WATCHDOG_USEC = 2_000_000
# Variables systemd sets for a service, which must come from the test alone.
SERVICE_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")


# -- the unit file ---------------------------------------------------------------------


def analyze(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *arguments], capture_output=True, text=True, encoding="utf-8"
    )


def install_root(directory: Path, *, low_port: bool = False, unit_text: str | None = None) -> Path:
    """A root for `systemd-analyze --root=` holding the unit exactly where an installer
    puts it. verify needs two things there that are not the unit's: ExecStart's program
    (a launcher at the venv path, handing over to this venv's ocpp-edge) and the system
    units every service depends on (sysinit.target...), copied from this machine. The
    unit file itself is checked as shipped, not a rewritten copy."""
    root = directory / "root"
    program = root / EXEC_START.split()[0].lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text(f'#!/bin/sh\nexec {Path(sys.executable).parent / "ocpp-edge"} "$@"\n')
    program.chmod(0o755)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / UNIT.name).write_text(unit_text if unit_text is not None else UNIT.read_text())
    if low_port:
        (units / "ocpp-edge.service.d").mkdir()
        shutil.copy(LOW_PORT, units / "ocpp-edge.service.d" / "low-port.conf")
    return root


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def overall_exposure(report: str) -> float:
    found = re.search(r"Overall exposure level for ocpp-edge\.service: (\d+\.\d)", report)
    assert found, report
    return float(found.group(1))


def test_the_unit_runs_the_installed_daemon_as_its_own_user() -> None:
    unit = unit_settings()
    assert unit["ExecStart"] == [EXEC_START]
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["30"] and unit["Restart"] == ["on-failure"]
    assert unit["User"] == unit["Group"] == ["ocpp-edge"]
    assert unit["StateDirectory"] == ["ocpp-edge"]
    assert unit["WorkingDirectory"] == ["/var/lib/ocpp-edge"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["DevicePolicy"] == ["closed"]


@pytest.mark.parametrize("low_port", [False, True], ids=["unit", "with-low-port-drop-in"])
def test_systemd_analyze_verify_has_nothing_to_say(tmp_path: Path, low_port: bool) -> None:
    # verify exits 0 on many mistakes (an unknown key is only printed): any output fails.
    result = analyze("verify", f"--root={install_root(tmp_path, low_port=low_port)}", UNIT.name)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_in_that_root_does_speak_up_about_a_mistake(tmp_path: Path) -> None:
    mistaken = UNIT.read_text().replace("ProtectHome=yes", "ProtectHomes=yes")
    root = install_root(tmp_path, unit_text=mistaken)
    output = analyze("verify", f"--root={root}", UNIT.name)
    assert "Unknown key 'ProtectHomes'" in output.stdout + output.stderr


def test_the_exposure_score_is_3_or_better() -> None:
    # --threshold is on the printed scale times ten: 30 fails a unit scored above 3.0.
    result = analyze("security", "--offline=true", "--threshold=30", str(UNIT))
    assert result.returncode == 0, result.stdout + result.stderr
    exposure = overall_exposure(result.stdout)
    assert exposure <= 3.0
    # The threshold really is compared on that scale: just under the score fails.
    stricter = analyze(
        "security", "--offline=true", f"--threshold={round(exposure * 10) - 1}", str(UNIT)
    )
    assert stricter.returncode != 0


def test_the_low_port_drop_in_adds_only_the_bind_capability(tmp_path: Path) -> None:
    root = install_root(tmp_path, low_port=True)
    result = analyze("security", "--offline=true", f"--root={root}", "--threshold=30", UNIT.name)
    assert result.returncode == 0, result.stdout
    assert overall_exposure(result.stdout) <= 3.0
    flagged = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("✗")}
    assert "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)" in flagged
    assert "CapabilityBoundingSet=~CAP_SYS_ADMIN" not in flagged


# -- the notifier on its own -----------------------------------------------------------


@pytest.mark.parametrize("bindings", [True, False], ids=["systemd-python", "own-socket"])
@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
async def test_a_notification_arrives_as_one_datagram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bindings: bool, abstract: bool
) -> None:
    address = f"@ocpp-edge-{uuid.uuid4().hex}" if abstract else str(tmp_path / "notify")
    manager = NotifySocket(address)
    # systemd-python reads $NOTIFY_SOCKET from the process's environment itself.
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    if not bindings:
        monkeypatch.setenv(BINDINGS_SWITCH, "0")
    notifier = ServiceNotifier()
    assert notifier.through_bindings is bindings
    try:
        assert notifier.notify("STATUS=checking", "X_SEEN=1")
        assert (await manager.next(within=2)).fields == {"STATUS": "checking", "X_SEEN": "1"}
    finally:
        manager.close()


def test_without_a_notify_socket_nothing_is_sent() -> None:
    notifier = ServiceNotifier({"WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False


def test_a_watchdog_meant_for_another_process_is_not_fed(tmp_path: Path) -> None:
    base = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
    assert ServiceNotifier(base).watchdog_seconds == 2.0
    assert ServiceNotifier(base | {"WATCHDOG_PID": str(os.getpid())}).watchdog_seconds == 2.0
    assert ServiceNotifier(base | {"WATCHDOG_PID": "1"}).watchdog_seconds is None
    assert ServiceNotifier(base | {"WATCHDOG_USEC": "0"}).watchdog_seconds is None


# -- the real daemon -------------------------------------------------------------------


@dataclass
class DaemonUnderTest:
    process: subprocess.Popen[bytes]
    port: int
    database: Path
    log: Path


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonUnderTest]]:
    """`python -m edge run` with a config of its own and the service variables given."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        environ: dict[str, str], wrap: Callable[[list[str]], list[str]] | None = None
    ) -> DaemonUnderTest:
        port, database = free_port(), tmp_path / "edge.db"
        config = tmp_path / "edge.toml"
        config.write_text(
            f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nunknown_chargers = "accept"\n'
            f'push_local_list = false\n[store]\npath = "{database}"\n'
            f'[api]\nport = 0\n[files]\nport = 0\ndirectory = "{tmp_path / "files"}"\n'
            '[[readers]]\nid = "door"\nkind = "simulated"\ncharger = "CP-1"\n'
        )
        argv = [sys.executable, "-m", "edge", "run", "--config", str(config)]
        log = tmp_path / "edge.log"
        base = {name: value for name, value in os.environ.items() if name not in SERVICE_VARIABLES}
        with log.open("ab") as output:
            process = subprocess.Popen(
                wrap(argv) if wrap else argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=base | environ,
            )
        started.append(process)
        return DaemonUnderTest(process, port, database, log)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def is_ready(notification: Notification) -> bool:
    return notification.fields.get("READY") == "1"


def is_watchdog(notification: Notification) -> bool:
    return notification.fields.get("WATCHDOG") == "1"


async def check_service_protocol(daemon: DaemonUnderTest, manager: NotifySocket) -> None:
    """READY=1 first and only once the port accepts and the store exists; STATUS= lines
    that follow a charger; watchdog pings every WatchdogSec/2; STOPPING=1 and exit 0."""
    first = await manager.next(within=20)
    assert is_ready(first), first
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=1):
        pass  # no retry: READY=1 promised that it listens
    assert daemon.database.exists()
    assert re.fullmatch(
        r"0 chargers online, cloud sync off, readers [01]/1 open", first.fields["STATUS"]
    )

    url = f"ws://127.0.0.1:{daemon.port}/ocpp"
    async with RawCharger(url, "CP-1") as charger:
        boot = {"chargePointVendor": "Test", "chargePointModel": "Unit"}
        assert (await charger.call("BootNotification", boot))[2]["status"] == "Accepted"
        await manager.until(
            lambda n: n.fields.get("STATUS") == "1 charger online, cloud sync off, readers 1/1 open"
        )
        # A reading for transaction 7 without its connector: refused, and logged as
        # concerning charger CP-1 and transaction 7.
        refused = await charger.call(
            "MeterValues",
            {"transactionId": 7, "meterValue": [{"timestamp": now_iso(), "sampledValue": []}]},
        )
        assert refused[0] == 4
        while len([n for n in manager.received if is_watchdog(n)]) < 3:
            await manager.until(is_watchdog, within=3)
        pings = [n.at for n in manager.received if is_watchdog(n)]
        assert 0.6 < pings[-1] - pings[-2] < 1.6  # WatchdogSec/2 = 1 s

        daemon.process.send_signal(signal.SIGTERM)
        stopping = await manager.until(lambda n: n.fields.get("STOPPING") == "1")
        assert stopping.fields["STATUS"].startswith("stopping")
        assert charger.connection is not None
        await charger.connection.wait_closed()
        assert charger.connection.close_code == 1001  # going away, not dropped
    assert await asyncio.to_thread(daemon.process.wait, 15) == 0
    assert sum(1 for n in manager.received if is_ready(n)) == 1


@pytest.mark.skipif(not namespaces_available(), reason="needs root for a mount namespace")
async def test_daemon_reports_through_systemd_python_and_logs_to_journald(
    tmp_path: Path, start_daemon: Callable[..., DaemonUnderTest]
) -> None:
    manager = NotifySocket(str(tmp_path / "notify"))
    journal = JournalSocket(tmp_path / "run")
    # Under systemd, stderr is the journal stream named by JOURNAL_STREAM: the log file
    # stands in for it, so the daemon switches to journald's own protocol.
    log_file = tmp_path / "edge.log"
    log_file.touch()
    stream = log_file.stat()
    environ = {
        "NOTIFY_SOCKET": manager.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "JOURNAL_STREAM": f"{stream.st_dev}:{stream.st_ino}",
    }
    daemon = start_daemon(environ, wrap=journal.command)
    try:
        await check_service_protocol(daemon, manager)
        connected = await journal.until(
            lambda entry: entry["MESSAGE"].endswith(b"CP-1 connected (accepted)")
        )
        refused = await journal.until(lambda entry: b"MeterValues answered" in entry["MESSAGE"])
    finally:
        manager.close()
        journal.close()
    assert connected["CHARGER_ID"] == b"CP-1" and "TRANSACTION_ID" not in connected
    assert connected["SYSLOG_IDENTIFIER"] == b"ocpp-edge"
    assert connected["PRIORITY"] == b"6"  # info
    assert (refused["CHARGER_ID"], refused["TRANSACTION_ID"]) == (b"CP-1", b"7")
    assert refused["PRIORITY"] == b"4"  # warning
    assert log_file.read_text() == "", "records went to the journal, not to stderr"


async def test_daemon_reports_through_its_own_socket_code_without_systemd_python(
    start_daemon: Callable[..., DaemonUnderTest],
) -> None:
    manager = NotifySocket(f"@ocpp-edge-{uuid.uuid4().hex}")
    environ = {
        "NOTIFY_SOCKET": manager.address,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        BINDINGS_SWITCH: "0",
    }
    daemon = start_daemon(environ)
    try:
        await check_service_protocol(daemon, manager)
    finally:
        manager.close()
    assert "CP-1 connected" in daemon.log.read_text()
