"""The aggregator's composition root: opens the store (migrating it), loads the fleet's
signing key, runs the MQTT side and the REST API on one event loop until `stop` is set
(SIGTERM/SIGINT under `ocpp-cloud run`, see contract/shutdown.py), then stops them: no new
requests, tasks ended (or cancelled after a grace period), the store's pool closed."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from cloud.aggregator import Aggregator
from cloud.api import cloud_api_server, create_cloud_api
from cloud.firmware import load_or_create_signing_key, remove_abandoned_uploads
from cloud.settings import CloudSettings
from cloud.store.database import open_store
from contract.config_files import ConfigError
from contract.http.serving import EmbeddedHttpServer
from contract.shutdown import STOP_GRACE_SECONDS, StoppableTaskGroup

log = logging.getLogger(__name__)


@dataclass
class CloudSite:
    """The running parts, for whoever started the aggregator (tests, benchmarks)."""

    aggregator: Aggregator
    api: EmbeddedHttpServer | None
    engine: Engine
    signing_key: Ed25519PrivateKey


_settled = False


def settle_start_up_objects() -> None:
    """Keep what start-up made (modules, the app and its routes: ~140,000 objects, for as
    long as the process lives) out of the garbage collector's full passes, each of which
    walked it all (~100 ms on a busy 2-core machine) and stalled the request under way.
    Once per process: what is frozen is never collected, so only start-up's."""
    global _settled
    if not _settled:
        _settled = True
        gc.collect()
        gc.freeze()


async def run_cloud(
    settings: CloudSettings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[CloudSite], None] | None = None,
) -> None:
    """Run the aggregator until `stop` is set (never, when None: until cancelled)."""
    stop = stop or asyncio.Event()
    missing = settings.api.required_token_missing()
    if missing is not None:
        raise ConfigError(missing)
    engine = await asyncio.to_thread(open_store, settings.store.url)
    try:
        key = await asyncio.to_thread(load_or_create_signing_key, settings.signing_key_path())
        removed = await asyncio.to_thread(remove_abandoned_uploads, settings.firmware.directory)
        if removed:
            log.info("removed %d firmware uploads cut off by an earlier stop", removed)
        aggregator = Aggregator(settings, engine)
        async with StoppableTaskGroup() as tasks:
            tasks.create_task(aggregator.run(stop), name="aggregator")
            api = None
            if settings.api.port:
                app = create_cloud_api(settings, engine, key, aggregator)
                api = cloud_api_server(app, settings)
                tasks.create_task(api.serve(), name="cloud-api")
                while not api.started:  # noqa: ASYNC110 - uvicorn gives no event
                    await asyncio.sleep(0.01)
                log.info("REST API on http://%s:%s/docs", settings.api.host, api.port)
            settle_start_up_objects()
            if on_ready is not None:
                on_ready(CloudSite(aggregator, api, engine, key))
            await stop.wait()
            log.info("stopping: no new requests, leaving the broker")
            if api is not None:
                api.stop()
            await tasks.stop(STOP_GRACE_SECONDS)
    finally:
        # A batch whose commit was under way when its task was cancelled finishes in its
        # thread, unacknowledged: the edge sends it again.
        engine.dispose()
