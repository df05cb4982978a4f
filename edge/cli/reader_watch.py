"""What `ocpp-edge readers` shows: the reader devices on this machine and the configured
reader each is mapped to; with --watch, every configured reader opened with its real
driver and each tap printed live with the charger it starts, so an installer can tell
which is which. Loads the drivers: edge/cli/readers.py imports it only when run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from contract.tables import render_table
from edge.hardware import Hardware
from edge.probes import daemon_running
from edge.readers.build import open_reader, uid_rules
from edge.readers.devices import describe_reader, find_devices, readers_using
from edge.readers.supervisor import supervise_reader
from edge.readers.taps import CardTap
from edge.settings import ReaderSettings, Settings, SimulatedReaderSettings

# A reader that fails to open is tried again within this while watching (the daemon
# waits up to a minute): an installer plugging it in sees it come online at once.
WATCH_LONGEST_RETRY_SECONDS = 5.0

Write = Callable[[str], None]


async def show_readers(
    settings: Settings,
    *,
    watch_seconds: float | None,
    write: Write,
    hardware: Hardware | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """The devices and the configured readers; with `watch_seconds` (0: until `stop` or
    Ctrl-C) the taps and the readers' comings and goings as they happen."""
    found = await asyncio.to_thread(find_devices)
    rows = []
    for device in found.devices:
        users = readers_using(device, settings.readers)
        rows.append((device.kind, device.path, device.description, ", ".join(users) or None))
    write("Devices on this machine:")
    write(render_table(["kind", "device", "name", "reader"], rows))
    for note in found.notes:
        write(f"  {note}")
    write("\nConfigured readers:")
    write(
        render_table(
            ["reader", "device", "starts"],
            [(reader.id, describe_reader(reader), _target(reader)) for reader in settings.readers],
        )
    )
    daemon = await asyncio.to_thread(daemon_running, settings)
    if daemon is not None:
        write(
            f"\nThe ocpp-edge daemon is running ({daemon}). It holds the readers (keyboard "
            "readers grabbed, serial ports locked, NFC readers claimed): taps go to it, not "
            "here. Stop it to watch: sudo systemctl stop ocpp-edge (start it again after)."
        )
    if watch_seconds is None:
        return
    stop = stop or asyncio.Event()
    if watch_seconds:
        asyncio.get_running_loop().call_later(watch_seconds, stop.set)
    await watch_readers(settings, hardware or Hardware(), write, stop)


async def watch_readers(
    settings: Settings, hardware: Hardware, write: Write, stop: asyncio.Event
) -> None:
    """Every configured reader (simulated ones aside) under its supervisor until `stop`."""
    readers = {}
    for reader in settings.readers:
        if isinstance(reader, SimulatedReaderSettings):
            write(f"reader {reader.id} (simulated): its taps go to the daemon's tap socket")
        else:
            readers[reader.id] = reader
    if not readers:
        write("no reader to watch: add a [[readers]] table for each reader")
        return

    async def print_tap(tap: CardTap) -> None:
        reader = readers[tap.reader_id]
        write(f"{_reader_label(reader)} -> {_target(reader)}: card {tap.uid}")

    def print_status(reader_id: str, online: bool, reason: str) -> None:
        label = _reader_label(readers[reader_id])
        write(f"{label} online" if online else f"{label} offline: {reason}")

    write(f"\nWatching {len(readers)} readers: tap a card on each (Ctrl-C to stop).")
    socket_path = settings.taps.socket_path(settings.store.path)
    tasks = [
        asyncio.create_task(
            supervise_reader(
                reader.id,
                open_reader(reader, socket_path, hardware),
                print_tap,
                rules=uid_rules(reader),
                debounce_seconds=reader.debounce_seconds,
                on_status=print_status,
                longest_retry=WATCH_LONGEST_RETRY_SECONDS,
            ),
            name=f"watch-{reader.id}",
        )
        for reader in readers.values()
    ]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _reader_label(reader: ReaderSettings) -> str:
    return f"reader {reader.id} ({describe_reader(reader)})"


def _target(reader: ReaderSettings) -> str:
    if reader.charger is None:
        return "no charger (its taps are refused)"
    if reader.connector == 0:
        return f"charger {reader.charger}, first free connector"
    return f"charger {reader.charger} connector {reader.connector}"
