"""The first-boot unit as systemd reads it: `systemd-analyze verify` on the unit and the
daemon's drop-in installed where the role puts them, and the order they give at boot."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.integration.test_service import analyze

UNITS = Path(__file__).resolve().parents[2] / "systemd"
FIRST_BOOT = UNITS / "ocpp-edge-firstboot.service"
DROP_IN = UNITS / "ocpp-edge.service.d" / "first-boot.conf"
COMMAND = "/opt/ocpp-edge/venv/bin/ocpp-edge first-boot --boot-dir /boot/firmware --root /"


def settings_of(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def install_root(directory: Path, first_boot_text: str | None = None) -> Path:
    """The two units and the drop-in where the role installs them, the program their
    ExecStart= names (a launcher to this venv's), and this machine's system units."""
    root = directory / "root"
    program = root / "opt/ocpp-edge/venv/bin/ocpp-edge"
    program.parent.mkdir(parents=True)
    program.write_text(f'#!/bin/sh\nexec {Path(sys.executable).parent / "ocpp-edge"} "$@"\n')
    program.chmod(0o755)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    (units / "ocpp-edge.service.d").mkdir(parents=True)
    shutil.copy(UNITS / "ocpp-edge.service", units)
    shutil.copy(DROP_IN, units / "ocpp-edge.service.d")
    (units / FIRST_BOOT.name).write_text(first_boot_text or FIRST_BOOT.read_text())
    return root


def test_the_unit_runs_the_command_once_per_start_before_the_daemon_and_sshd() -> None:
    unit = settings_of(FIRST_BOOT)
    assert unit["Type"] == ["oneshot"] and unit["ExecStart"] == [COMMAND]
    assert "ocpp-edge.service" in unit["Before"][0].split()
    assert "ssh.service" in unit["Before"][0].split()
    assert unit["RequiresMountsFor"][0].split()[0] == "/boot/firmware"
    # The command's 90 s of enrollment retries fit in the start timeout.
    assert int(unit["TimeoutStartSec"][0]) >= 90 + 120
    # A start without a network must not wait for systemd-networkd-wait-online.
    assert not [line for line in unit["After"] + unit.get("Wants", []) if "online" in line]
    drop_in = settings_of(DROP_IN)
    assert drop_in == {
        "Wants": ["ocpp-edge-firstboot.service"],
        "After": ["ocpp-edge-firstboot.service"],
    }


def test_systemd_analyze_verify_has_nothing_to_say(tmp_path: Path) -> None:
    root = install_root(tmp_path)
    for unit in (FIRST_BOOT.name, "ocpp-edge.service"):
        result = analyze("verify", f"--root={root}", unit)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), unit


def test_verify_in_that_root_does_speak_up_about_a_mistake(tmp_path: Path) -> None:
    mistaken = FIRST_BOOT.read_text().replace("TimeoutStartSec=", "TimeoutStartSecs=")
    output = analyze("verify", f"--root={install_root(tmp_path, mistaken)}", FIRST_BOOT.name)
    assert "Unknown key 'TimeoutStartSecs'" in output.stdout + output.stderr


def test_the_command_the_unit_runs_exists_with_those_options(tmp_path: Path) -> None:
    root = install_root(tmp_path)
    program, *arguments = COMMAND.split()
    result = subprocess.run(
        [str(root / program.lstrip("/")), *arguments[:1], "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--boot-dir" in result.stdout and "--root" in result.stdout
