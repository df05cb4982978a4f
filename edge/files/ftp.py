"""An FTP server for chargers that can only upload diagnostics by FTP (pyftpdlib).

pyftpdlib has its own blocking loop, so it runs in a thread of its own; a received
file is handed to the event loop to be recorded. An upload cut off half-way is
deleted rather than kept as if whole.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

from edge.files.store import record_received_file
from edge.store.writer import StoreWriter

log = logging.getLogger(__name__)

# How long the daemon's stop waits for the FTP thread (a daemon thread: not joined at exit).
STOP_SECONDS = 1.0


class UploadFtpServer:
    """`async with UploadFtpServer(...) as ftp:`: listening until the block ends."""

    def __init__(
        self, uploads: Path, host: str, port: int, user: str, password: str, store: StoreWriter
    ) -> None:
        self.uploads, self.host, self.port = uploads, host, port
        self.user, self.password, self.store = user, password, store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: FTPServer | None = None

    async def __aenter__(self) -> UploadFtpServer:
        loop = asyncio.get_running_loop()
        store = self.store
        authorizer = DummyAuthorizer()
        # e: change directory, l: list, w: store files; nothing can be read back or deleted.
        authorizer.add_user(self.user, self.password, str(self.uploads), perm="elw")

        class Handler(FTPHandler):  # type: ignore[misc]
            def on_file_received(self, file: str) -> None:
                path = Path(file)
                loop.call_soon_threadsafe(
                    store.submit, lambda db: record_received_file(db, path, "ftp")
                )

            def on_incomplete_file_received(self, file: str) -> None:
                Path(file).unlink(missing_ok=True)

        Handler.authorizer = authorizer
        Handler.banner = "ocpp-edge upload server"
        self._server = FTPServer((self.host, self.port), Handler)
        self.port = self._server.address[1]
        self._thread = threading.Thread(target=self._serve, name="ftp-uploads", daemon=True)
        self._thread.start()
        log.info("FTP uploads on ftp://%s:%s", self.host, self.port)
        return self

    def _serve(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            self._server.serve_forever(timeout=0.2, blocking=False)
        self._server.close_all()

    async def __aexit__(self, *exc_info: Any) -> None:
        # The thread sees this within one poll (0.2 s), then closes every connection:
        # an upload cut off half-way is deleted (on_incomplete_file_received).
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, STOP_SECONDS)
            if self._thread.is_alive():
                log.warning("FTP server still closing after %g s: not waited for", STOP_SECONDS)
