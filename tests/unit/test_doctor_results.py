"""The doctor's pure parts: disk thresholds, the clock's verdict, the exit code and the
report's layout."""

from __future__ import annotations

from edge.cli.doctor import render_results
from edge.clock_sync import ClockState
from edge.doctor import (
    CLOCK_FIX,
    DISK_ERROR_BYTES,
    DISK_WARNING_BYTES,
    CheckResult,
    Status,
    clock_result,
    disk_space_result,
    exit_code,
)

MIB = 1024**2


def test_disk_thresholds() -> None:
    assert disk_space_result(DISK_WARNING_BYTES, "/var").status is Status.OK
    assert disk_space_result(DISK_WARNING_BYTES - 1, "/var").status is Status.WARNING
    assert disk_space_result(DISK_ERROR_BYTES, "/var").status is Status.WARNING
    low = disk_space_result(DISK_ERROR_BYTES - 1, "/var")
    assert low.status is Status.ERROR
    assert low.summary == "199 MiB free for the store (/var)"
    assert "free space" in low.fix
    assert disk_space_result(5 * 1024 * MIB + 512 * MIB, "/").summary == (
        "5.5 GiB free for the store (/)"
    )


def test_clock_verdicts() -> None:
    synchronized = clock_result(ClockState(True, "timedatectl"))
    assert (synchronized.status, synchronized.summary) == (
        Status.OK,
        "synchronized (says timedatectl)",
    )
    drifting = clock_result(ClockState(False, "the kernel (adjtimex)"))
    assert drifting.status is Status.ERROR and drifting.fix == CLOCK_FIX
    assert "install/enable systemd-timesyncd or chrony" in CLOCK_FIX
    unknown = clock_result(ClockState(None, "the kernel (adjtimex)"))
    assert unknown.status is Status.WARNING and unknown.fix == CLOCK_FIX


def test_warnings_alone_exit_zero() -> None:
    fine = CheckResult("store", Status.OK, "current")
    warned = CheckResult("GPIO", Status.WARNING, "no pin factory", "install lgpio")
    broken = CheckResult("clock", Status.ERROR, "not synchronized", CLOCK_FIX)
    assert exit_code([fine, warned]) == 0
    assert exit_code([fine, warned, broken]) == 1


def test_the_report_layout() -> None:
    report = render_results(
        [
            CheckResult("store", Status.OK, "current", "never shown when OK"),
            CheckResult("readers", Status.OK, "1 configured", details=("serial port: /dev/ttyS0",)),
            CheckResult("GPIO", Status.WARNING, "no pin factory", "install lgpio"),
            CheckResult("clock", Status.ERROR, "not synchronized", "enable chrony"),
        ]
    )
    assert report.splitlines() == [
        "✓ store            current",
        "✓ readers          1 configured",
        "                   serial port: /dev/ttyS0",
        "! GPIO             no pin factory",
        "                   fix: install lgpio",
        "✗ clock            not synchronized",
        "                   fix: enable chrony",
        "1 problem, 1 warning",
    ]
    assert render_results([CheckResult("store", Status.OK, "current")]).endswith("\nall good")
