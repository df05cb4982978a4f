"""The composition root: builds every part of the edge from the settings and runs
them until `stop` is set (SIGTERM/SIGINT under `ocpp-edge run`, see contract/shutdown.py),
then stops them in order, each step bounded: no new chargers or requests, tasks ended
(or cancelled after a grace period), connections closed, the store flushed.

`run_edge` reads as the list of its steps; each step (a method of `EdgeDaemon`) builds
one part from the settings, starts its tasks in the one task group and registers its
teardown on the one exit stack, so the parts stop in the reverse order of their start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from contract.http.serving import EmbeddedHttpServer
from contract.runtime import run_until_stopped
from contract.shutdown import STOP_GRACE_SECONDS, StoppableTaskGroup
from edge.api.app import create_api, local_api_server
from edge.certificates import SiteCA
from edge.clock import utc_now_text
from edge.demo import demo_plan, demo_reader, enroll_demo_cards
from edge.events import CertificateRequestAccepted, ChargerAccepted, Listener, SiteEvent
from edge.feedback.build import build_feedback
from edge.files.ftp import UploadFtpServer
from edge.files.http import file_server as file_server_of
from edge.files.store import FileDirectory
from edge.files.tokens import UploadTokens
from edge.files.uploads import UploadArea, UploadLimits, remove_partial_uploads
from edge.hardware import Hardware
from edge.ocpp.certificate_delivery import deliver_certificate
from edge.ocpp.charger_work import ChargerWork
from edge.ocpp.connected import ConnectedChargers
from edge.ocpp.local_list import sync_local_list
from edge.ocpp.server import OcppServer, close_connections
from edge.ocpp.site_limit import SiteLimitBalancer
from edge.readers.build import open_reader, uid_rules
from edge.readers.simulated import SimulatedReader, TapSocket
from edge.readers.supervisor import supervise_reader
from edge.service import ServiceNotifier, SiteStatus, StatusSource
from edge.settings import ReaderSettings, Settings
from edge.simulator import SimulatedChargerConfig, run_simulated_charger
from edge.site import SiteContext
from edge.site_tasks import prune_history, run_site_tasks
from edge.store import chargers
from edge.store.writer import StoreWriter
from edge.sync.firmware import FirmwareDownloads
from edge.sync.link import SyncLink
from edge.sync.outbox import Outbox, backlog
from edge.tap_flow import ReaderPost, TapFlow

log = logging.getLogger(__name__)


@dataclass
class Site:
    """The running parts, for whoever started the daemon (tests, the demo)."""

    ocpp: OcppServer
    api: EmbeddedHttpServer | None
    files: EmbeddedHttpServer | None
    taps: TapFlow | None
    sync: SyncLink | None
    context: SiteContext


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
    # Leaving the block: the task group first (its tasks end or are cancelled), then
    # the exit stack, in the reverse order of the steps: the store is closed last.
    async with contextlib.AsyncExitStack() as exits, StoppableTaskGroup() as tasks:
        edge = EdgeDaemon(settings, stop, hardware or Hardware(), exits, tasks)
        await edge.open_store()
        await edge.build_site_context()
        await edge.start_ocpp_server()
        edge.start_charger_work()
        edge.start_site_limit()
        edge.start_site_tasks()
        await edge.start_demo_chargers()
        edge.start_history_pruning()
        await edge.start_file_servers()
        edge.start_cloud_link()
        await edge.start_readers()
        edge.start_local_api()
        site = await edge.ready()
        if on_ready is not None:
            on_ready(site)
        await stop.wait()
        await edge.begin_stop()


class EdgeDaemon:
    """The steps of `run_edge`, and the parts they build."""

    def __init__(
        self,
        settings: Settings,
        stop: asyncio.Event,
        hardware: Hardware,
        exits: contextlib.AsyncExitStack,
        tasks: StoppableTaskGroup,
    ) -> None:
        self.settings, self.stop, self.hardware = settings, stop, hardware
        self.exits, self.tasks = exits, tasks
        self.service = ServiceNotifier()
        self.outbox = Outbox(enabled=settings.sync.enabled)
        self.connected = ConnectedChargers()
        self.authority: SiteCA | None = None
        self.api: EmbeddedHttpServer | None = None
        self.file_server: EmbeddedHttpServer | None = None
        self.taps: TapFlow | None = None
        self.link: SyncLink | None = None

    async def open_store(self) -> None:
        """The store, flushed and closed when everything else has stopped; no charger
        is connected before the server listens."""
        self.store = store = StoreWriter(self.settings.store.path)
        self.exits.callback(
            lambda: log.info(
                "store closed after %d commits of %d units", store.commits, store.units_committed
            )
        )
        await self.exits.enter_async_context(store)
        await store.run(lambda db: chargers.mark_all_disconnected(db, utc_now_text()))

    async def build_site_context(self) -> None:
        """The site CA, and the context every feature is given."""
        settings = self.settings
        self.authority = await asyncio.to_thread(
            SiteCA.load_or_create,
            *settings.certificates.paths(settings.store.path),
            settings.certificates.validity_days,
        )
        self.context = SiteContext(
            settings=settings.ocpp,
            store=self.store,
            chargers=self.connected,
            certificate_authority=self.authority,
            authorization=settings.authorization,
            outbox=self.outbox,
        )

    async def start_ocpp_server(self) -> None:
        """Listening for chargers; at the stop, their connections closed within bounds."""
        self.server = OcppServer(self.context, self.connected)
        self.listener = await self.exits.enter_async_context(self.server.serving())
        self.exits.push_async_callback(close_connections, self.listener)

    def start_charger_work(self) -> None:
        """Per-charger work after its answered calls, supervised: no charger can end the
        task group."""
        assert self.authority is not None
        work = ChargerWork(self.tasks, self.settings.ocpp.limits.max_tasks_per_charger)
        push_local_list = self.settings.ocpp.push_local_list
        self.context.events.subscribe(
            _charger_work_after(self.context, work, self.authority, push_local_list)
        )

    def start_site_limit(self) -> None:
        if self.settings.smart_charging.site_limit_w:
            balancer = SiteLimitBalancer(self.context, self.settings.smart_charging)
            self.context.events.subscribe(balancer.on_event)
            self.tasks.create_task(balancer.run(self.stop), name="site-limit")

    def start_site_tasks(self) -> None:
        self.tasks.create_task(run_site_tasks(self.context, self.stop), name="site-tasks")

    async def start_demo_chargers(self) -> None:
        count = self.settings.demo.chargers
        if not count:
            return
        await self.store.run(lambda db: enroll_demo_cards(db, count))
        url = f"ws://127.0.0.1:{self.server.port}{self.settings.ocpp.path_prefix}"
        for number in range(1, count + 1):
            charger = run_simulated_charger(
                url,
                f"demo-{number}",
                SimulatedChargerConfig(),
                demo_plan(number, count),
                stop=self.stop,
            )
            self.tasks.create_task(charger, name=f"demo-charger-{number}")

    def start_history_pruning(self) -> None:
        kept = self.settings.store
        if kept.message_log_days or kept.command_history_days:
            pruning = prune_history(
                self.store, kept.message_log_days, kept.command_history_days, self.stop
            )
            self.tasks.create_task(pruning, name="history-pruning")

    async def start_file_servers(self) -> None:
        """The chargers' file server (HTTP) and FTP uploads, by setting."""
        settings = self.settings
        files = FileDirectory(settings.files.directory)
        uploads = UploadArea(files.uploads, UploadLimits.of(settings.files))
        tokens = await asyncio.to_thread(_prepare_uploads, files, settings)
        if settings.files.port:
            self.file_server = file_server_of(files, self.store, uploads, tokens, settings.files)
            self.tasks.create_task(self.file_server.serve(), name="file-server")
        if settings.files.ftp_port:
            ftp = UploadFtpServer(uploads, tokens, settings.files, self.store)
            await self.exits.enter_async_context(ftp)

    def start_cloud_link(self) -> None:
        settings = self.settings
        if not settings.sync.enabled:
            return
        downloads = FirmwareDownloads(
            self.store,
            FileDirectory(settings.files.directory),
            settings.sync.firmware_public_key,
            report=self.outbox.append,
        )
        self.link = SyncLink(settings.sync, self.context, self.outbox, settings.files, downloads)
        self.tasks.create_task(self.link.run(self.stop), name="cloud-link")
        health = self.link.report_health(self.stop)
        self.tasks.create_task(health, name="edge-health")

    async def start_readers(self) -> None:
        """Every configured reader (the demo's own when none is) under a supervisor,
        its taps into the tap flow."""
        settings, hardware = self.settings, self.hardware
        readers = settings.readers
        if settings.demo.chargers and not readers:
            readers = [demo_reader(settings.demo.chargers)]
        if not readers:
            return
        posts = [_reader_post(reader, hardware) for reader in readers]
        self.taps = flow = TapFlow(self.context, posts, settings.taps, settings.authorization)
        self.exits.push_async_callback(flow.close)
        self.context.events.subscribe(flow.on_event)
        socket_path = settings.taps.socket_path(settings.store.path)
        opened = {reader.id: open_reader(reader, socket_path, hardware) for reader in readers}
        simulated = {
            reader_id: reader
            for reader_id, reader in opened.items()
            if isinstance(reader, SimulatedReader)
        }
        if simulated:
            await self.exits.enter_async_context(TapSocket(socket_path, simulated))
        for reader in readers:
            supervised = supervise_reader(
                reader.id,
                opened[reader.id],
                flow.tap_received,
                rules=uid_rules(reader),
                debounce_seconds=reader.debounce_seconds,
                on_status=flow.reader_status,
            )
            self.tasks.create_task(
                run_until_stopped(self.stop, supervised), name=f"reader-{reader.id}"
            )

    def start_local_api(self) -> None:
        settings = self.settings
        if settings.api.port:
            api = create_api(self.context, settings, self.taps, self.link)
            self.api = local_api_server(api, settings.api)
            self.tasks.create_task(self.api.serve(), name="local-api")

    async def ready(self) -> Site:
        """Once the HTTP servers listen: READY=1 to the service manager, and the parts."""
        for http_server in (self.api, self.file_server):
            while http_server and not http_server.started:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.01)
        if self.api is not None:
            log.info("local API on http://%s:%s/docs", self.settings.api.host, self.api.port)
        site = Site(self.server, self.api, self.file_server, self.taps, self.link, self.context)
        self.service.started(_status_source(site, self.context), self.tasks, self.stop)
        return site

    async def begin_stop(self) -> None:
        """No new chargers or requests, 1001 (going away) to each connected charger, the
        tasks given STOP_GRACE_SECONDS; leaving run_edge's block does the rest."""
        log.info("stopping: closing charger connections and flushing the store")
        self.service.stopping()
        self.listener.close()
        for http_server in (self.api, self.file_server):
            if http_server is not None:
                http_server.stop()
        await self.tasks.stop(STOP_GRACE_SECONDS)


def _charger_work_after(
    site: SiteContext, work: ChargerWork, authority: SiteCA, push_local_list: bool
) -> Listener:
    """The work a charger's answered call starts: its local list once it is accepted,
    its certificate once its request is."""

    def on_event(event: SiteEvent) -> None:
        if isinstance(event, ChargerAccepted) and push_local_list:
            work.start(event.charger_id, "local list", sync_local_list(site, event.charger_id))
        elif isinstance(event, CertificateRequestAccepted):
            delivery = deliver_certificate(site, authority, event.charger_id, event.request_id)
            work.start(event.charger_id, "certificate delivery", delivery)

    return on_event


def _reader_post(reader: ReaderSettings, hardware: Hardware) -> ReaderPost:
    """A reader's place at its charger, with its lights, buzzer and display."""
    feedback = build_feedback(
        reader.feedback, reader.id, pin_factory=hardware.pin_factory, open_bus=hardware.open_bus
    )
    return ReaderPost(reader.id, reader.charger, reader.connector, feedback)


def _status_source(site: Site, context: SiteContext) -> StatusSource:
    """What the service manager's status line reports, read from the running parts."""

    def now() -> SiteStatus:
        taps = site.taps
        return SiteStatus(
            chargers_online=len(context.chargers.connected_ids()),
            cloud_connected=None if site.sync is None else site.sync.connected,
            readers_open=None
            if taps is None
            else sum(1 for state in taps.reader_states.values() if state.online),
            readers=0 if taps is None else len(taps.posts),
        )

    async def backlog_events() -> int:
        return (await context.store.run(backlog)).events

    return StatusSource(now, backlog_events if site.sync is not None else None, context.events)


def _prepare_uploads(files: FileDirectory, settings: Settings) -> UploadTokens:
    """The key upload locations are signed with; uploads cut off by the last stop removed."""
    removed = remove_partial_uploads(files.uploads)
    if removed:
        log.info("removed %d uploads cut off by the last stop", removed)
    return UploadTokens.load_or_create(settings.files.directory)
