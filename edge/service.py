"""The service manager protocol (sd_notify): the daemon tells systemd when it is ready
(`READY=1`), what it is doing (`STATUS=`), that its event loop still turns
(`WATCHDOG=1`) and that it is shutting down (`STOPPING=1`).

Messages go through systemd-python's `systemd.daemon.notify` when it can be imported,
else through this module's own implementation of the same datagram protocol (a path
or, with a leading `@`, an abstract socket in $NOTIFY_SOCKET). Setting
OCPP_EDGE_SYSTEMD_PYTHON=0 forces the latter. Without $NOTIFY_SOCKET (not started by
systemd as `Type=notify`) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from contract.cli import BINDINGS_SWITCH
from contract.runtime import until_stopped
from edge.events import ChargerConnection, SiteEvent, SiteEvents
from edge.store.database import StoreError

log = logging.getLogger(__name__)

# STATUS= is refreshed this often, and at once when a charger comes or goes.
STATUS_EVERY_SECONDS = 5.0

Send = Callable[[str], bool]


@dataclass(frozen=True)
class SiteStatus:
    """What the status line reports, as the running site gives it."""

    chargers_online: int
    # None: cloud sync is off.
    cloud_connected: bool | None
    # None: no readers configured.
    readers_open: int | None = None
    readers: int = 0
    # None: not counted (yet, or the store could not say).
    backlog_events: int | None = None


@dataclass(frozen=True)
class StatusSource:
    """Where the status comes from: the site's parts as they are now, the cloud backlog
    (read from the store, so asked for separately), and the events that change it."""

    now: Callable[[], SiteStatus]
    backlog_events: Callable[[], Awaitable[int]] | None
    events: SiteEvents


class ServiceNotifier:
    """What the daemon tells the service manager. Built from the environment systemd
    gives a `Type=notify` service: $NOTIFY_SOCKET, $WATCHDOG_USEC, $WATCHDOG_PID
    (`environ`, for tests; systemd-python reads $NOTIFY_SOCKET from the process's own)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.socket_address = environ.get("NOTIFY_SOCKET") or None
        self.watchdog_seconds = _watchdog_seconds(environ)
        self.through_bindings = False
        self._send: Send | None = None
        self._failing = False  # warned once until a message goes through again
        if self.socket_address is not None:
            self._send = _bindings_sender(environ)
            self.through_bindings = self._send is not None
            self._send = self._send or self._send_on_socket

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def notify(self, *lines: str) -> bool:
        """Send `lines` ("KEY=value") as one message; False when not sent."""
        if self._send is None:
            return False
        try:
            sent = self._send("\n".join(lines))
        except OSError as error:
            # The service manager went away or the socket is full: the daemon goes on.
            if not self._failing:
                log.warning("could not notify the service manager: %s", error)
            self._failing = True
            return False
        self._failing = False
        return sent

    def started(self, source: StatusSource, tasks: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        """The OCPP server listens and the store is open: READY=1, then STATUS= lines
        and watchdog pings from tasks on the event loop until `stop` is set."""
        if not self.enabled:
            return
        status = describe(source.now())
        self.notify("READY=1", f"STATUS={status}")
        tasks.create_task(self._report_status(source, stop, status), name="service-status")
        if self.watchdog_seconds is not None:
            tasks.create_task(self._keep_watchdog_fed(stop), name="service-watchdog")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping: closing charger connections")

    async def _keep_watchdog_fed(self, stop: asyncio.Event) -> None:
        assert self.watchdog_seconds is not None
        # Twice per period: one late ping is not yet a restart. A stuck loop sends none.
        every = self.watchdog_seconds / 2
        while not stop.is_set():
            self.notify("WATCHDOG=1")
            await until_stopped(stop, every)

    async def _report_status(self, source: StatusSource, stop: asyncio.Event, last: str) -> None:
        changed = asyncio.Event()

        def on_event(event: SiteEvent) -> None:
            if isinstance(event, ChargerConnection):
                changed.set()

        source.events.subscribe(on_event)
        while not stop.is_set():
            backlog_events = await _backlog_events(source)
            status = describe(replace(source.now(), backlog_events=backlog_events))
            if status != last and not stop.is_set():
                self.notify(f"STATUS={status}")
                last = status
            changed.clear()
            await until_stopped(stop, STATUS_EVERY_SECONDS, or_when=changed)

    def _send_on_socket(self, message: str) -> bool:
        """sd_notify(3)'s protocol: one datagram to the socket in $NOTIFY_SOCKET."""
        assert self.socket_address is not None
        address = self.socket_address
        if address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
            sender.sendto(message.encode(), address)
        return True


def describe(status: SiteStatus) -> str:
    """One line for `systemctl status`: "12 chargers online, backlog 0, readers 2/2 open"."""
    online = status.chargers_online
    parts = [f"{online} charger{'' if online == 1 else 's'} online"]
    if status.cloud_connected is None:
        parts.append("cloud sync off")
    elif status.backlog_events is not None:
        reach = "" if status.cloud_connected else " (cloud unreachable)"
        parts.append(f"backlog {status.backlog_events}{reach}")
    if status.readers_open is not None:
        parts.append(f"readers {status.readers_open}/{status.readers} open")
    return ", ".join(parts)


async def _backlog_events(source: StatusSource) -> int | None:
    """Events waiting for the cloud; None without sync, or when the store cannot say
    (the status line is no reason to stop the daemon: the store's own users fail loudly)."""
    if source.backlog_events is None:
        return None
    try:
        return await source.backlog_events()
    except (StoreError, sqlite3.Error) as error:
        log.warning("status: could not count the cloud backlog: %s", error)
        return None


def _bindings_sender(environ: Mapping[str, str]) -> Send | None:
    if environ.get(BINDINGS_SWITCH) == "0":
        return None
    try:
        from systemd.daemon import notify
    except ImportError:
        return None

    def send(message: str) -> bool:
        return bool(notify(message))

    return send


def _watchdog_seconds(environ: Mapping[str, str]) -> float | None:
    """WatchdogSec= as systemd passes it; None when off or meant for another process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
