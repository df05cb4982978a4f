"""Running an ASGI app with uvicorn inside the daemon's own event loop and TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT and stops every part in order.
        yield


# After stop(): requests in flight (an upload, a download, a command waiting for a
# charger) get this long to finish, then they are cancelled.
REQUEST_GRACE_SECONDS = 1  # uvicorn takes whole seconds


class _CutAtStop(logging.Filter):
    """A request cut at the stop is expected, not an error: uvicorn logs each as an
    "Exception in ASGI application" with the traceback of its cancellation."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            return False
        if "timeout graceful shutdown exceeded" in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class EmbeddedHttpServer:
    """`await server.serve()` in a task; `server.stop()` to end it: no new connections,
    and those in flight end within REQUEST_GRACE_SECONDS."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=REQUEST_GRACE_SECONDS,
        )
        self._server = _EmbeddedServer(config)
        errors = logging.getLogger("uvicorn.error")
        if not any(isinstance(each, _CutAtStop) for each in errors.filters):
            errors.addFilter(_CutAtStop())

    async def serve(self) -> None:
        await self._server.serve()

    def stop(self) -> None:
        self._server.should_exit = True

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0
