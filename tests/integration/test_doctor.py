"""`ocpp-edge doctor` against real parts: a running edge daemon, a real mosquitto (with
and without a password file), a real SQLite store, ports held by a real other process,
a serial reader on a pty and a keyboard-wedge reader through the hardware boundary."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial
from gpiozero.pins.mock import MockFactory

from edge.cli import main
from edge.doctor import CLOCK_FIX, CheckResult, Status, run_checks
from edge.hardware import Hardware
from edge.settings import Settings
from edge.store.database import latest_schema_version, open_database
from tests.certificates import CertificateAuthority
from tests.conftest import StartEdge, free_port
from tests.doubles.input_device import FakeInputDevice, FakeInputDevices
from tests.doubles.serial_pty import serial_pty
from tests.mosquitto import Mosquitto, TlsListener, write_password_file
from tests.ocpp_client import RawCharger
from tests.waiting import eventually

# Whatever this machine has: reported, with a fix when not OK, but not up to the test.
ENVIRONMENT = {"GPIO", "clock", "disk"}


def write_config(path: Path, settings: Settings) -> Path:
    """The TOML file that gives `settings` (the keys that were set)."""
    lines: list[str] = []
    for section, values in settings.model_dump(mode="json", exclude_unset=True).items():
        tables = values if isinstance(values, list) else [values]
        for table in tables:
            lines.append(f"[[{section}]]" if isinstance(values, list) else f"[{section}]")
            lines.extend(f"{key} = {json.dumps(value)}" for key, value in table.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def site_config(tmp_path: Path, ocpp: dict[str, Any] | None = None, **sections: Any) -> Path:
    """A config for a site whose daemon is not running, its ports free."""
    settings = Settings(
        ocpp={"host": "127.0.0.1", "port": free_port(), **(ocpp or {})},
        store={"path": str(tmp_path / "edge.db")},
        api={"port": 0},
        files={"directory": str(tmp_path / "files"), "port": 0},
        taps={"socket": str(tmp_path / "taps.sock")},
        **sections,
    )
    return write_config(tmp_path / "config.toml", settings)


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results}


async def test_a_good_site_passes(start_edge: StartEdge, broker: Mosquitto, tmp_path: Path) -> None:
    edge = await start_edge(
        with_api=True,
        files={"port": free_port(), "ftp_port": free_port()},
        sections={
            "sync": {"edge_id": "site-1", "broker_host": "127.0.0.1", "broker_port": broker.port},
            "readers": [{"id": "bay-1", "kind": "simulated", "charger": "CP-1", "connector": 1}],
        },
    )
    config = write_config(tmp_path / "config.toml", edge.settings)
    link = edge.site.sync
    assert link is not None
    await eventually(lambda: link.connected)
    async with RawCharger(edge.url, "CP-1") as charger:
        await charger.boot()
        results = await run_checks(config)

    for result in results:
        if result.name not in ENVIRONMENT:
            assert result.status is Status.OK, result
    checks = by_name(results)
    assert checks["config"].summary == f"{config} is valid"
    assert checks["daemon"].summary.startswith("running: its local API answers")
    assert "schema version" in checks["store"].summary and "(current)" in checks["store"].summary
    assert checks["reader bay-1"].summary == "simulated: online in the daemon"
    for port in ("OCPP port", "local API port", "file server port", "FTP uploads port"):
        assert checks[port].summary.endswith("is held by the ocpp-edge daemon"), checks[port]
    assert checks["chargers"].summary == "1 of 1 connected: CP-1"
    # The daemon is connected: the doctor asks it rather than take its place at the broker.
    assert checks["cloud broker"].summary.startswith(
        f"the daemon is connected to 127.0.0.1:{broker.port} as site-1"
    )
    # No GPIO on this machine: said, with what it means and what to do.
    gpio = checks["GPIO"]
    assert gpio.status is Status.WARNING and "lights, buzzers and relays won't work" in gpio.summary
    assert gpio.fix
    clock = checks["clock"]
    assert clock.status is Status.OK or clock.fix == CLOCK_FIX
    assert checks["disk"].summary.endswith(f"free for the store ({tmp_path})")


def test_a_bad_config_names_the_key_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text(f'[store]\npath = "{tmp_path / "edge.db"}"\n\n[ocpp]\nport = 0\n')
    code = main(["doctor", "--config", str(bad)])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "✗ config           invalid configuration"
    assert f"{bad}:5: ocpp.port = 0: Input should be greater than or equal to 1" in lines[1]
    assert "fix: correct the key on the line named" in lines[2]
    assert lines[-1] == "1 problem, 0 warnings"


async def test_a_store_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    store = open_database(tmp_path / "edge.db")
    store.conn.execute(f"PRAGMA user_version = {latest_schema_version() + 1}")
    store.conn.close()
    checks = by_name(await run_checks(site_config(tmp_path)))
    assert checks["store"].status is Status.ERROR
    assert f"is newer than this ocpp-edge knows ({latest_schema_version()})" in (
        checks["store"].summary
    )
    assert checks["store"].fix == "install the ocpp-edge release that wrote it, or restore a backup"


async def test_a_broker_that_is_not_there(tmp_path: Path) -> None:
    closed_port = free_port()
    config = site_config(
        tmp_path,
        sync={"edge_id": "site-1", "broker_host": "127.0.0.1", "broker_port": closed_port},
    )
    broker = by_name(await run_checks(config))["cloud broker"]
    assert broker.status is Status.ERROR
    assert broker.summary.startswith(f"TCP failed: 127.0.0.1:{closed_port} refused the connection")
    assert "sync.broker_port" in broker.fix


async def test_broker_credentials(tmp_path: Path) -> None:
    passwords = write_password_file(tmp_path / "passwd", {"site-1": "right-password"})
    mosquitto = Mosquitto(tmp_path / "broker", anonymous=False, password_file=passwords)
    mosquitto.start()
    try:
        sync = {"edge_id": "site-1", "broker_host": "127.0.0.1", "broker_port": mosquitto.port}
        wrong = site_config(tmp_path, sync=sync | {"password": "wrong-password"})
        broker = by_name(await run_checks(wrong))["cloud broker"]
        assert broker.status is Status.ERROR
        assert broker.summary.startswith("authentication failed: the broker refused")
        assert "sync.password" in broker.fix

        right = site_config(tmp_path, sync=sync | {"password": "right-password"})
        broker = by_name(await run_checks(right))["cloud broker"]
        assert broker.status is Status.OK
        assert broker.summary == f"connected to 127.0.0.1:{mosquitto.port} as site-1"
    finally:
        mosquitto.stop()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def other_server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Another program listening on a loopback port: Python's own HTTP server."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_a_port_held_by_another_program(
    other_server: tuple[int, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    port, process = other_server
    await eventually(lambda: listening(port))
    results = await run_checks(site_config(tmp_path, ocpp={"port": port}))
    ocpp = by_name(results)["OCPP port"]
    assert ocpp.status is Status.ERROR
    assert ocpp.summary.startswith(f"127.0.0.1:{port}: in use by ")
    assert f"(pid {process.pid}), not by the ocpp-edge daemon" in ocpp.summary
    assert ocpp.fix == "stop the program that holds it, or set ocpp.port to a free port"


async def test_reader_devices_are_checked_without_being_held(tmp_path: Path) -> None:
    devices = FakeInputDevices()
    keyboard = devices.plug(FakeInputDevice())
    with serial_pty() as line:
        readers = [
            {"id": "gate", "kind": "serial", "port": line.path, "charger": "CP-1"},
            {"id": "gone", "kind": "serial", "port": str(tmp_path / "ttyUSB9")},
            {"id": "desk", "kind": "keyboard", "device": keyboard.path, "charger": "CP-2"},
            {"id": "lost", "kind": "keyboard", "device": "/dev/input/by-id/usb-gone-event-kbd"},
        ]
        hardware = Hardware(pin_factory=MockFactory(), open_input_device=devices.open)
        checks = by_name(
            await run_checks(site_config(tmp_path, readers=readers), hardware=hardware)
        )
        # Closed again: the port can be taken for itself by the next program.
        serial.Serial(line.path, exclusive=True).close()

    assert checks["readers"].summary.startswith("4 configured;")
    assert checks["reader gate"] == CheckResult(
        "reader gate", Status.OK, f"serial {line.path}: opens"
    )
    gone = checks["reader gone"]
    assert (gone.status, gone.summary) == (Status.ERROR, f"{tmp_path / 'ttyUSB9'} does not exist")
    assert gone.fix == "plug the reader in and check the path (ls -l /dev/serial/by-id/)"
    assert checks["reader desk"].summary == f"keyboard {keyboard.path}: opens (RFID Reader)"
    assert keyboard.calls == ["grab", "ungrab", "close"]
    lost = checks["reader lost"]
    assert lost.status is Status.ERROR and lost.summary.endswith("does not exist")
    assert checks["GPIO"] == CheckResult("GPIO", Status.OK, checks["GPIO"].summary)
    assert checks["GPIO"].summary.startswith("pin factory MockFactory")


async def test_broker_tls(tmp_path: Path) -> None:
    edge_ca = CertificateAuthority(tmp_path, "Edge CA")
    other_ca = CertificateAuthority(tmp_path, "Other CA")
    server = edge_ca.issue("localhost", server=True)
    client = edge_ca.issue("site-1")
    mosquitto = Mosquitto(
        tmp_path / "broker",
        anonymous=False,
        tls=TlsListener(edge_ca.files.certificate, server.certificate, server.key),
    )
    mosquitto.start()
    try:
        sync = {
            "edge_id": "site-1",
            "broker_host": "localhost",
            "broker_port": mosquitto.tls_port,
            "tls_certificate": str(client.certificate),
            "tls_private_key": str(client.key),
        }
        wrong = site_config(tmp_path, sync=sync | {"tls_ca": str(other_ca.files.certificate)})
        broker = by_name(await run_checks(wrong))["cloud broker"]
        assert broker.status is Status.ERROR
        assert broker.summary.startswith("TLS failed: [SSL: CERTIFICATE_VERIFY_FAILED]")
        assert "sync.tls_ca" in broker.fix

        right = site_config(tmp_path, sync=sync | {"tls_ca": str(edge_ca.files.certificate)})
        broker = by_name(await run_checks(right))["cloud broker"]
        assert broker.summary == (
            f"connected to localhost:{mosquitto.tls_port} over TLS with the client certificate"
        )
    finally:
        mosquitto.stop()
