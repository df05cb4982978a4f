"""Whether this machine's clock is synchronized. A Raspberry Pi has no battery-backed
clock: until NTP sets it, it runs from whenever it last shut down, and every time the
edge stores (transactions, meter values) would be wrong.

Asked, in order: systemd's `timedatectl`, the flag file systemd-timesyncd writes, and
the kernel itself (adjtimex), which any NTP daemon (chrony, ntpd) keeps informed."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

TIMEDATECTL_SECONDS = 2.0
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
# adjtimex's answer when the kernel considers the clock unsynchronized (STA_UNSYNC).
TIME_ERROR = 5
# Larger than struct timex on any Linux: only `modes` (0: change nothing) is read by it.
TIMEX_BUFFER_BYTES = 512


@dataclass(frozen=True)
class ClockState:
    """`synchronized` None: nothing could tell. `source` says who answered."""

    synchronized: bool | None
    source: str


def clock_state() -> ClockState:
    answer = _timedatectl()
    if answer is not None:
        return ClockState(answer, "timedatectl")
    # Written by systemd-timesyncd once it synchronized; chrony and ntpd do not write it.
    if TIMESYNCD_FLAG.exists():
        return ClockState(True, str(TIMESYNCD_FLAG))
    return ClockState(_kernel_synchronized(), "the kernel (adjtimex)")


def _timedatectl() -> bool | None:
    command = shutil.which("timedatectl")
    if command is None:
        return None
    try:
        result = subprocess.run(
            [command, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=TIMEDATECTL_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = result.stdout.strip()
    if result.returncode != 0 or value not in ("yes", "no"):
        return None  # no systemd as init (a container), or no D-Bus
    return value == "yes"


def _kernel_synchronized() -> bool | None:
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buffer = ctypes.create_string_buffer(TIMEX_BUFFER_BYTES)
        state = libc.adjtimex(buffer)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != TIME_ERROR)
