"""The composition root: builds every part of the edge from the settings and runs
them until `stop` is set (SIGTERM/SIGINT under `ocpp-edge run`, see edge/shutdown.py),
then stops them in order, each step bounded: no new chargers or requests, tasks ended
(or cancelled after a grace period), connections closed, the store flushed."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database
from websockets.asyncio.server import Server

from edge.api.app import create_api, local_api_server
from edge.api.serving import EmbeddedHttpServer
from edge.certificates import SiteCA
from edge.clock import now_ms, utc_now_text
from edge.feedback.build import build_feedback
from edge.files.ftp import UploadFtpServer
from edge.files.http import file_server as file_server_of
from edge.files.store import FileDirectory
from edge.files.tokens import UploadTokens
from edge.files.uploads import UploadArea, UploadLimits, remove_partial_uploads
from edge.hardware import Hardware
from edge.ocpp.certificate_delivery import deliver_certificate
from edge.ocpp.charger_work import ChargerWork
from edge.ocpp.local_list import sync_local_list
from edge.ocpp.server import OcppServer
from edge.ocpp.session import SiteContext
from edge.ocpp.site_limit import SiteLimitBalancer
from edge.readers.build import open_reader, uid_rules
from edge.readers.simulated import SimulatedReader, TapSocket
from edge.readers.supervisor import supervise_reader
from edge.service import ServiceNotifier
from edge.settings import ReaderSettings, Settings, SimulatedReaderSettings
from edge.shutdown import STOP_GRACE_SECONDS, StoppableTaskGroup
from edge.simulator import DemoPlan, SimulatedChargerConfig, run_simulated_charger
from edge.site_tasks import run_site_tasks
from edge.store import chargers, id_tags, message_log
from edge.store.writer import StoreWriter
from edge.sync import protocol as wire
from edge.sync.firmware import FirmwareDownloads
from edge.sync.link import SyncLink
from edge.sync.outbox import Outbox
from edge.tap_flow import ReaderPost, TapFlow

log = logging.getLogger(__name__)

DEMO_CARDS_PER_CHARGER = 4
DEMO_READER = "demo-reader"
HEALTH_EVERY_SECONDS = 3600.0
# Chargers get this long to answer the closing handshake before their connection is cut.
CLOSE_CONNECTIONS_SECONDS = 1.0


def demo_cards(charger_number: int) -> list[str]:
    # Hex, like the UIDs readers report, so that they can be tapped at the demo reader.
    return [f"DE00{charger_number:02d}{card:02d}" for card in range(1, DEMO_CARDS_PER_CHARGER + 1)]


def demo_reader(chargers_count: int) -> SimulatedReaderSettings:
    """The demo's reader, at its last charger, which charges only when a card is tapped."""
    return SimulatedReaderSettings(
        id=DEMO_READER, kind="simulated", charger=f"demo-{chargers_count}"
    )


@dataclass
class Site:
    """The running parts, for whoever started the daemon (tests, the demo)."""

    ocpp: OcppServer
    api: EmbeddedHttpServer | None
    files: EmbeddedHttpServer | None
    taps: TapFlow | None
    sync: SyncLink | None


async def run_edge(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Site], None] | None = None,
    hardware: Hardware | None = None,
) -> None:
    """Run the edge daemon until `stop` is set (never, when None: until cancelled).
    `hardware`: the machine's own pins, buses and devices unless fakes are given."""
    stop = stop or asyncio.Event()
    hardware = hardware or Hardware()
    async with StoreWriter(settings.store.path) as store:
        await store.run(lambda db: chargers.mark_all_disconnected(db, utc_now_text()))
        authority = await asyncio.to_thread(
            SiteCA.load_or_create,
            *settings.certificates.paths(settings.store.path),
            settings.certificates.validity_days,
        )
        outbox = Outbox(enabled=settings.sync.enabled)
        server = OcppServer(
            SiteContext(
                settings=settings.ocpp,
                store=store,
                certificate_authority=authority,
                authorization=settings.authorization,
                outbox=outbox,
            )
        )
        async with (
            server.serving() as listener,
            contextlib.AsyncExitStack() as stack,
            StoppableTaskGroup() as tasks,
        ):
            # The last of the stack's steps, just before the server's own exit.
            stack.push_async_callback(_close_charger_connections, listener)
            # Per-charger work runs supervised: no charger can end this task group.
            charger_work = ChargerWork(tasks, settings.ocpp.limits.max_tasks_per_charger)
            if settings.ocpp.push_local_list:
                server.context.after_boot.append(
                    lambda charger_id: charger_work.start(
                        charger_id, "local list", sync_local_list(server, charger_id)
                    )
                )
            server.context.after_sign_certificate.append(
                lambda charger_id, request_id: charger_work.start(
                    charger_id,
                    "certificate delivery",
                    deliver_certificate(server, authority, charger_id, request_id),
                )
            )
            if settings.smart_charging.site_limit_w:
                balancer = SiteLimitBalancer(server, settings.smart_charging)
                server.context.events.subscribe(balancer.on_event)
                tasks.create_task(balancer.run(stop), name="site-limit")
            tasks.create_task(run_site_tasks(server, stop), name="site-tasks")
            if settings.demo.chargers:
                count = settings.demo.chargers
                await store.run(lambda db: _enroll_demo_cards(db, count))
                url = f"ws://127.0.0.1:{server.port}{settings.ocpp.path_prefix}"
                for number in range(1, count + 1):
                    # The last charger is left to the demo reader's taps.
                    plan = DemoPlan(id_tags=demo_cards(number) if number < count else [])
                    tasks.create_task(
                        run_simulated_charger(
                            url, f"demo-{number}", SimulatedChargerConfig(), plan, stop=stop
                        ),
                        name=f"demo-charger-{number}",
                    )
            if settings.store.message_log_days:
                tasks.create_task(
                    _prune_message_log(store, settings.store.message_log_days, stop),
                    name="message-log-pruning",
                )
            files = FileDirectory(settings.files.directory)
            uploads = UploadArea(files.uploads, UploadLimits.of(settings.files))
            tokens = await asyncio.to_thread(_prepare_uploads, files, settings)
            file_server = None
            if settings.files.port:
                file_server = file_server_of(files, store, uploads, tokens, settings.files)
                tasks.create_task(file_server.serve(), name="file-server")
            if settings.files.ftp_port:
                ftp = UploadFtpServer(uploads, tokens, settings.files, store)
                await stack.enter_async_context(ftp)
            readers = settings.readers
            if settings.demo.chargers and not readers:
                readers = [demo_reader(settings.demo.chargers)]
            link = None
            if settings.sync.enabled:
                downloads = FirmwareDownloads(
                    store,
                    FileDirectory(settings.files.directory),
                    settings.sync.firmware_public_key,
                    report=outbox.append,
                )
                link = SyncLink(settings.sync, server, outbox, settings.files, downloads)
                tasks.create_task(link.run(stop), name="cloud-link")
                tasks.create_task(_report_health(link, outbox, stop), name="edge-health")
            tap_flow = None
            if readers:
                tap_flow = await _start_readers(
                    settings, readers, hardware, server, tasks, stack, stop
                )
            api = None
            if settings.api.port:
                api = local_api_server(create_api(server, settings, tap_flow, link), settings.api)
                tasks.create_task(api.serve(), name="local-api")
            for http_server in (api, file_server):
                while http_server and not http_server.started:  # noqa: ASYNC110 - no event
                    await asyncio.sleep(0.01)
            if api is not None:
                log.info("local API on http://%s:%s/docs", settings.api.host, api.port)
            site = Site(server, api, file_server, tap_flow, link)
            service = ServiceNotifier()
            service.started(site, tasks, stop)
            if on_ready is not None:
                on_ready(site)
            await stop.wait()
            log.info("stopping: closing charger connections and flushing the store")
            service.stopping()
            # No new chargers, and 1001 (going away) to each connected one.
            listener.close()
            for http_server in (api, file_server):
                if http_server is not None:
                    http_server.stop()
            await tasks.stop(STOP_GRACE_SECONDS)
    log.info("store closed after %d commits of %d units", store.commits, store.units_committed)


def _prepare_uploads(files: FileDirectory, settings: Settings) -> UploadTokens:
    """The key upload locations are signed with; uploads cut off by the last stop removed."""
    removed = remove_partial_uploads(files.uploads)
    if removed:
        log.info("removed %d uploads cut off by the last stop", removed)
    return UploadTokens.load_or_create(settings.files.directory)


async def _start_readers(
    settings: Settings,
    reader_settings: list[ReaderSettings],
    hardware: Hardware,
    server: OcppServer,
    tasks: asyncio.TaskGroup,
    stack: contextlib.AsyncExitStack,
    stop: asyncio.Event,
) -> TapFlow:
    """Every configured reader under a supervisor, its taps into the tap flow."""
    posts = [
        ReaderPost(
            reader.id,
            reader.charger,
            reader.connector,
            build_feedback(
                reader.feedback,
                reader.id,
                pin_factory=hardware.pin_factory,
                open_bus=hardware.open_bus,
            ),
        )
        for reader in reader_settings
    ]
    flow = TapFlow(server, posts, settings.taps, settings.authorization)
    stack.push_async_callback(flow.close)
    server.context.events.subscribe(flow.on_event)
    socket_path = settings.taps.socket_path(settings.store.path)
    readers = {reader.id: open_reader(reader, socket_path, hardware) for reader in reader_settings}
    simulated = {
        reader_id: reader
        for reader_id, reader in readers.items()
        if isinstance(reader, SimulatedReader)
    }
    if simulated:
        await stack.enter_async_context(TapSocket(socket_path, simulated))
    for reader in reader_settings:
        supervised = supervise_reader(
            reader.id,
            readers[reader.id],
            flow.tap_received,
            rules=uid_rules(reader),
            debounce_seconds=reader.debounce_seconds,
            on_status=flow.reader_status,
        )
        tasks.create_task(_until(stop, supervised), name=f"reader-{reader.id}")
    return flow


async def _report_health(link: SyncLink, outbox: Outbox, stop: asyncio.Event) -> None:
    """An `edge.health` event every hour, for the cloud's history of this edge."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=HEALTH_EVERY_SECONDS)
        if stop.is_set():
            return
        status = await link.status()
        health = wire.EdgeHealth(
            software_version=status.software_version or "unknown",
            uptime_s=status.uptime_s or 0.0,
            backlog=status.backlog or 0,
            oldest_age_s=status.oldest_age_s,
            disk_free_mb=status.disk_free_mb or 0.0,
        )
        await link.store.run(functools.partial(outbox.append, event=health))


def _enroll_demo_cards(db: Database, chargers_count: int) -> None:
    now = utc_now_text()
    for number in range(1, chargers_count + 1):
        for card in demo_cards(number):
            if id_tags.get_id_tag(db, card) is None:
                id_tags.save_id_tag(db, card, now, label="demo card")


async def _prune_message_log(store: StoreWriter, days: int, stop: asyncio.Event) -> None:
    """Keep `days` of OCPP frames: check at start, then hourly, in small steps."""
    chunk = 5000
    while not stop.is_set():
        prune = functools.partial(
            message_log.prune_oldest_messages, before_ms=now_ms() - days * 86_400_000, limit=chunk
        )
        while await store.run(prune) == chunk and not stop.is_set():
            pass
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=3600)


async def _until(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run `work`, which runs forever, until `stop` is set."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopping):
            pending.cancel()
        await asyncio.gather(task, stopping, return_exceptions=True)
    error = task.exception() if task.done() and not task.cancelled() else None
    if error is not None:
        raise error


async def _close_charger_connections(listener: Server) -> None:
    """Wait for the closing handshakes `listener.close()` started; cut the connections
    of chargers that do not answer within CLOSE_CONNECTIONS_SECONDS."""
    listener.close()  # idempotent: already called when the stop began
    try:
        async with asyncio.timeout(CLOSE_CONNECTIONS_SECONDS):
            await listener.wait_closed()
    except TimeoutError:
        # Not answering, or not reading what we send (a close() would wait for that).
        silent = list(listener.all_connections)
        log.warning(
            "%d charger connections not closed within %g s: cut",
            len(silent),
            CLOSE_CONNECTIONS_SECONDS,
        )
        for connection in silent:
            connection.transport.abort()
