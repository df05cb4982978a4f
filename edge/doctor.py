"""The checks of `ocpp-edge doctor`: each looks at one part of the installation and
returns results in plain words, with a one-line fix for whatever is not right. They run
side by side, each bounded by short timeouts, so the whole run takes a few seconds."""

from __future__ import annotations

import asyncio
import errno
import getpass
import os
import shutil
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from contract.config_files import ConfigError
from edge.clock import parse_timestamp
from edge.clock_sync import ClockState, clock_state
from edge.hardware import Hardware, NoPinFactory
from edge.presence import presence
from edge.probes import (
    PortState,
    Service,
    daemon_reader_states,
    daemon_running,
    daemon_sync_state,
    port_state,
)
from edge.readers.devices import (
    FoundDevices,
    check_reader_device,
    describe_reader,
    find_devices,
    readers_using,
)
from edge.settings import (
    DEFAULT_CONFIG_PATHS,
    Settings,
    SimulatedReaderSettings,
    find_config_file,
    load_settings,
)
from edge.store import chargers
from edge.store.database import (
    StoreError,
    latest_schema_version,
    open_readonly,
    schema_version,
)
from edge.sync.broker import BrokerStep, attempt_connection

DISK_WARNING_BYTES = 1024**3  # 1 GiB
DISK_ERROR_BYTES = 200 * 1024**2  # 200 MiB
BROKER_STEP_SECONDS = 1.5
# Chargers listed by name when some are not connected; the rest are counted.
CHARGERS_NAMED = 5


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: `summary` says what was found, `fix` what to do when it
    is not OK, `details` any lines beneath (devices found, a config's problems)."""

    name: str
    status: Status
    summary: str
    fix: str = ""
    details: tuple[str, ...] = ()


def exit_code(results: Sequence[CheckResult]) -> int:
    """1 when something is wrong; warnings alone are not."""
    return 1 if any(result.status is Status.ERROR for result in results) else 0


async def run_checks(config: Path | None, *, hardware: Hardware | None = None) -> list[CheckResult]:
    """Every check, for the config file `config` (None: where the daemon looks).
    Blocking checks run in threads, so a daemon in this process can answer them."""
    hardware = hardware or Hardware()
    configuration, settings = check_configuration(config)
    if settings is None:
        return [configuration]
    # Here, not in a thread: silencing gpiozero's warnings changes process-wide filters.
    gpio = check_gpio(hardware)
    daemon = await asyncio.to_thread(daemon_running, settings)
    running = CheckResult(
        "daemon", Status.OK, f"running: {daemon}" if daemon else "not running (nothing answers)"
    )
    store, readers, ports, chargers, broker, clock, disk = await asyncio.gather(
        _reported(lambda: asyncio.to_thread(check_store, settings)),
        _reported(lambda: asyncio.to_thread(check_readers, settings, hardware, bool(daemon))),
        _reported(lambda: asyncio.to_thread(check_ports, settings)),
        _reported(lambda: asyncio.to_thread(check_chargers, settings, datetime.now(UTC))),
        _reported(lambda: check_broker(settings)),
        _reported(lambda: asyncio.to_thread(lambda: clock_result(clock_state()))),
        _reported(lambda: asyncio.to_thread(check_disk_space, settings.store.path)),
    )
    # GPIO after the readers, whose lights and buzzers it drives.
    return [
        configuration,
        running,
        *store,
        *readers,
        gpio,
        *ports,
        *chargers,
        *broker,
        *clock,
        *disk,
    ]


async def _reported(
    check: Callable[[], Awaitable[CheckResult | list[CheckResult]]],
) -> list[CheckResult]:
    """What `check` found; a check that breaks is one more thing to report."""
    try:
        outcome = await check()
    except Exception as error:
        outcome = CheckResult(
            "doctor",
            Status.ERROR,
            f"a check failed: {type(error).__name__}: {error}",
            "report this with the output of ocpp-edge doctor",
        )
    return outcome if isinstance(outcome, list) else [outcome]


def check_configuration(explicit: Path | None) -> tuple[CheckResult, Settings | None]:
    try:
        path = find_config_file(explicit)
        settings = load_settings(path)
    except ConfigError as error:
        lines = str(error).splitlines()
        return CheckResult(
            "config",
            Status.ERROR,
            lines[0].removesuffix(":"),
            "correct the key on the line named (config.example.toml documents every key)",
            tuple(line.strip() for line in lines[1:]),
        ), None
    if path is None:
        looked = ", ".join(str(default) for default in DEFAULT_CONFIG_PATHS)
        return CheckResult(
            "config",
            Status.WARNING,
            f"no config file (looked for {looked}): the defaults apply",
            "write /etc/ocpp-edge/config.toml from config.example.toml, or pass --config",
        ), settings
    return CheckResult("config", Status.OK, f"{path} is valid"), settings


def check_store(settings: Settings) -> CheckResult:
    path = settings.store.path.resolve()
    user = getpass.getuser()
    if not path.exists():
        directory = _existing_parent(path)
        if not os.access(directory, os.W_OK):
            return CheckResult(
                "store",
                Status.ERROR,
                f"no store at {path}, and {directory} is not writable by {user}",
                "make the directory the edge's user's (chown), or set store.path",
            )
        return CheckResult(
            "store",
            Status.WARNING,
            f"no store yet at {path}: the daemon creates it at its first start",
            "start the daemon once (sudo systemctl start ocpp-edge)",
        )
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = schema_version(connection)
        finally:
            connection.close()
    except sqlite3.Error as error:
        return CheckResult(
            "store",
            Status.ERROR,
            f"{path} cannot be read as a store: {error}",
            "restore the store from a backup, or set store.path to the right file",
        )
    latest = latest_schema_version()
    if version > latest:
        return CheckResult(
            "store",
            Status.ERROR,
            f"{path}: schema version {version} is newer than this ocpp-edge knows ({latest})",
            "install the ocpp-edge release that wrote it, or restore a backup",
        )
    writable = [candidate for candidate in (path, path.parent) if os.access(candidate, os.W_OK)]
    if len(writable) < 2:
        return CheckResult(
            "store",
            Status.ERROR,
            f"{path} or its directory is not writable by {user}",
            f"chown the directory and the file to the edge's user (chown -R USER {path.parent})",
        )
    if version < latest:
        return CheckResult(
            "store",
            Status.WARNING,
            f"{path}: schema version {version}; this ocpp-edge migrates it to {latest}",
            "restart the daemon: it migrates the store at start",
        )
    return CheckResult("store", Status.OK, f"{path}: schema version {version} (current), writable")


def _existing_parent(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")


def check_readers(
    settings: Settings, hardware: Hardware, daemon_running: bool
) -> list[CheckResult]:
    """What is plugged in, then each configured reader: as the running daemon sees it
    when its local API says, else whether its device is there and opens."""
    found = find_devices()
    results = [reader_devices_result(found, settings)]
    states = daemon_reader_states(settings) if daemon_running else None
    for reader in settings.readers:
        name, device = f"reader {reader.id}", describe_reader(reader)
        if states is not None and reader.id in states:
            online, reason = states[reader.id]
            if online:
                results.append(CheckResult(name, Status.OK, f"{device}: online in the daemon"))
            else:
                results.append(
                    CheckResult(
                        name,
                        Status.ERROR if online is False else Status.WARNING,
                        f"{device}: {'offline' if online is False else 'not open'}: {reason}",
                        "do what the reason says; stop the daemon and try the reader with "
                        "ocpp-edge readers --watch",
                    )
                )
            continue
        checked = check_reader_device(reader, hardware)
        if checked.usable or (checked.held and daemon_running):
            held = " (in use: the daemon runs)" if checked.held else ""
            results.append(CheckResult(name, Status.OK, f"{device}: {checked.summary}{held}"))
        else:
            results.append(CheckResult(name, Status.ERROR, checked.summary, checked.fix))
    return results


def reader_devices_result(found: FoundDevices, settings: Settings) -> CheckResult:
    details = []
    for device in found.devices:
        users = readers_using(device, settings.readers)
        used = f" -> {', '.join(users)}" if users else ""
        named = f" ({device.description})" if device.description else ""
        details.append(f"{device.kind}: {device.path}{named}{used}")
    details.extend(found.notes)
    count = len(found.devices)
    summary = f"{count} device{'' if count == 1 else 's'} found" if count else "no devices found"
    if not settings.readers:
        return CheckResult(
            "readers",
            Status.WARNING,
            f"no readers configured; {summary}",
            "add a [[readers]] table per reader (ocpp-edge readers shows the devices found)",
            tuple(details),
        )
    simulated = sum(isinstance(reader, SimulatedReaderSettings) for reader in settings.readers)
    configured = f"{len(settings.readers)} configured"
    if simulated:
        configured += f" ({simulated} simulated)"
    return CheckResult("readers", Status.OK, f"{configured}; {summary}", details=tuple(details))


def check_gpio(hardware: Hardware) -> CheckResult:
    try:
        factory = hardware.pin_factory_in_use()
    except NoPinFactory as missing:
        return gpio_missing_result(_is_raspberry_pi(), str(missing))
    try:
        board = f" on {factory.board_info.model}"
    except Exception:  # a factory without board information is still a factory
        board = ""
    return CheckResult("GPIO", Status.OK, f"pin factory {type(factory).__name__}{board}")


def gpio_missing_result(raspberry_pi: bool, reason: str) -> CheckResult:
    fix = (
        "install lgpio for the edge's Python (pip install lgpio, or python3-lgpio in a "
        "--system-site-packages venv) and add its user to the gpio group"
        if raspberry_pi
        else "this is not a Raspberry Pi: drive lights and buzzers from a Pi, or leave "
        "[readers.feedback] pins unset"
    )
    return CheckResult(
        "GPIO",
        Status.WARNING,
        "no GPIO pin factory: lights, buzzers and relays won't work"
        + (f" ({reason})" if reason else ""),
        fix,
    )


def _is_raspberry_pi() -> bool:
    try:
        return "Raspberry Pi" in Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False


def check_ports(settings: Settings) -> list[CheckResult]:
    files = settings.files
    ports = [
        (Service.OCPP, "ocpp", settings.ocpp.host, settings.ocpp.port, "port"),
        (Service.API, "api", settings.api.host, settings.api.port, "port"),
        (Service.FILES, "files", files.host, files.port, "port"),
        (Service.FTP, "files", files.host, files.ftp_port, "ftp_port"),
    ]
    results = []
    for service, section, host, port, key in ports:
        if not port:
            continue  # turned off
        name = f"{service} port"
        tls = service is Service.OCPP and settings.ocpp.security_profile >= 2
        state = port_state(service, host, port, tls=tls)
        where = f"{host}:{port}"
        if state.free:
            results.append(CheckResult(name, Status.OK, f"{where} is free"))
        elif state.daemon:
            results.append(CheckResult(name, Status.OK, f"{where} is held by the ocpp-edge daemon"))
        else:
            results.append(
                CheckResult(
                    name, Status.ERROR, f"{where}: {state.problem}", _port_fix(state, section, key)
                )
            )
    return results


def _port_fix(state: PortState, section: str, key: str) -> str:
    if state.errno == errno.EACCES:
        return f"set {section}.{key} above 1024, or give the service CAP_NET_BIND_SERVICE"
    if state.errno == errno.EADDRINUSE:
        return f"stop the program that holds it, or set {section}.{key} to a free port"
    return f"set {section}.host to an address of this machine (or 0.0.0.0)"


def check_chargers(settings: Settings, now: datetime) -> CheckResult:
    hint = (
        f"set each charger's central system URL to ws://<this machine>:{settings.ocpp.port}"
        f"{settings.ocpp.path_prefix}/<charger id>"
    )
    try:
        db = open_readonly(settings.store.path)
    except StoreError as error:
        return CheckResult("chargers", Status.WARNING, f"none seen: {error}", hint)
    try:
        rows = [row for row in chargers.list_chargers(db) if row["registration"] != "rejected"]
    finally:
        db.conn.close()
    seen = [row for row in rows if row["last_seen_at"]]
    if not seen:
        return CheckResult("chargers", Status.WARNING, "no charger has connected yet", hint)
    online = [row["id"] for row in rows if presence(row, settings, now) == "online"]
    absent = [_absence(row, settings, now) for row in rows if row["id"] not in online]
    pending = [row["id"] for row in rows if row["registration"] == "pending"]
    summary = f"{len(online)} of {len(rows)} connected"
    if pending:
        return CheckResult(
            "chargers",
            Status.WARNING,
            f"{summary}; waiting for acceptance: {_some(pending)}",
            f"accept each one: ocpp-edge chargers accept {pending[0]}",
        )
    if absent:
        return CheckResult(
            "chargers",
            Status.WARNING,
            f"{summary}; {_some(absent)}",
            "check those chargers' power, network and central system URL",
        )
    return CheckResult("chargers", Status.OK, f"{summary}: {_some(online)}")


def _absence(row: dict[str, Any], settings: Settings, now: datetime) -> str:
    if not row["last_seen_at"]:
        return f"{row['id']} never seen"
    ago = _ago(now - parse_timestamp(row["last_seen_at"]))
    if presence(row, settings, now) == "stale":
        return f"{row['id']} connected but silent for {ago}"
    return f"{row['id']} last seen {ago} ago"


def _ago(elapsed: timedelta) -> str:
    seconds = int(elapsed.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:CHARGERS_NAMED])
    more = len(items) - CHARGERS_NAMED
    return f"{shown} and {more} more" if more > 0 else shown


BROKER_FIXES = {
    BrokerStep.DNS: "check sync.broker_host and this machine's DNS (/etc/resolv.conf)",
    BrokerStep.TCP: "check sync.broker_host and sync.broker_port, that the broker runs, and "
    "that no firewall blocks the port",
    BrokerStep.TLS: "check sync.tls_ca (the CA of the broker's certificate), the broker's "
    "name in it, and this edge's certificate and key",
    BrokerStep.AUTHENTICATION: "check sync.username and sync.password (or the client "
    "certificate) against the broker's password file",
    BrokerStep.MQTT: "check that sync.broker_port is the broker's MQTT port (a TLS port "
    "needs sync.tls_ca)",
}


async def check_broker(settings: Settings) -> CheckResult:
    sync = settings.sync
    if not sync.enabled:
        return CheckResult(
            "cloud broker", Status.OK, "cloud sync is off ([sync] broker_host unset)"
        )
    running = await asyncio.to_thread(daemon_sync_state, settings)
    if running is not None and running.get("connected"):
        # Ask the daemon rather than connect beside it: a broker that takes the client id
        # from the certificate would hand the doctor the daemon's session.
        return CheckResult(
            "cloud broker",
            Status.OK,
            f"the daemon is connected to {running['broker']} as {running['edge_id']} "
            f"({running['backlog']} events waiting)",
        )
    attempt = await attempt_connection(
        sync, identifier=f"edge-{sync.edge_id}-doctor", step_seconds=BROKER_STEP_SECONDS
    )
    if attempt.failed_at is None:
        return CheckResult("cloud broker", Status.OK, attempt.detail)
    return CheckResult(
        "cloud broker",
        Status.ERROR,
        f"{attempt.failed_at} failed: {attempt.detail}",
        BROKER_FIXES[attempt.failed_at],
    )


CLOCK_FIX = "install/enable systemd-timesyncd or chrony (a Pi has no battery-backed clock)"


def clock_result(state: ClockState) -> CheckResult:
    if state.synchronized:
        return CheckResult("clock", Status.OK, f"synchronized (says {state.source})")
    if state.synchronized is None:
        return CheckResult(
            "clock", Status.WARNING, "cannot tell whether the clock is synchronized", CLOCK_FIX
        )
    return CheckResult(
        "clock",
        Status.ERROR,
        f"not synchronized (says {state.source}): stored times would be wrong",
        CLOCK_FIX,
    )


def check_disk_space(store_path: Path) -> CheckResult:
    directory = _existing_parent(store_path.resolve())
    return disk_space_result(shutil.disk_usage(directory).free, str(directory))


def disk_space_result(free_bytes: int, where: str) -> CheckResult:
    """Below DISK_ERROR_BYTES the store may soon fail to write; below DISK_WARNING_BYTES
    there is little room for firmware images and the message log."""
    free = (
        f"{free_bytes / 1024**3:.1f} GiB"
        if free_bytes >= 1024**3
        else f"{free_bytes // 1024**2} MiB"
    )
    summary = f"{free} free for the store ({where})"
    fix = "free space (old firmware images, logs: journalctl --vacuum-size=100M) or a larger card"
    if free_bytes < DISK_ERROR_BYTES:
        return CheckResult("disk", Status.ERROR, summary, fix)
    if free_bytes < DISK_WARNING_BYTES:
        return CheckResult("disk", Status.WARNING, summary, fix)
    return CheckResult("disk", Status.OK, summary)
