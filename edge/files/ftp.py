"""An FTP server for chargers that can only upload diagnostics by FTP (pyftpdlib).

Each charger logs in as itself: the user is its id, the password the upload token the
edge put in the location of its GetDiagnostics/GetLog (edge/files/tokens.py), and it
lands in its own folder, where it can only store files (no listing, reading, deleting,
appending or resuming). A file is written under a temporary name through the same limits
as HTTP uploads (edge/files/uploads.py: size per upload enforced as it arrives, the
charger's share, the disk's free floor), hashed as it arrives, then fsynced, renamed and
recorded in the store; only then is the transfer answered 226. An upload cut off, or
past a limit (426), is deleted.

pyftpdlib has blocking loops, so it runs in threads of its own, one per connection (at
most `files.max_connections`, `max_connections_per_source` per address); the record is
handed to the event loop and waited for by that connection's thread.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from pathlib import Path
from typing import Any

from pyftpdlib.authorizers import AuthenticationFailed
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.servers import ThreadedFTPServer

from edge.clock import utc_now_text
from edge.files.store import FileNameError, safe_name
from edge.files.tokens import UploadTokens
from edge.files.uploads import Upload, UploadArea, UploadRefused
from edge.settings import FilesSettings
from edge.store import files
from edge.store.writer import StoreWriter

log = logging.getLogger(__name__)
# Seconds a connection's thread waits for its record to be committed.
RECORD_TIMEOUT_S = 60.0


class ChargerAuthorizer:
    """pyftpdlib's authorizer interface: a user is a charger id, its password a token."""

    def __init__(self, area: UploadArea, tokens: UploadTokens) -> None:
        self.area = area
        self.tokens = tokens

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        if self.tokens.charger_of(password) != username:
            raise AuthenticationFailed(
                "wrong user or password: log in with the location of a new GetDiagnostics/GetLog"
            )
        self.area.folder(username).mkdir(parents=True, exist_ok=True)

    def get_home_dir(self, username: str) -> str:
        return str(self.area.folder(username))

    def impersonate_user(self, username: str, password: str) -> None:
        pass

    def terminate_impersonation(self, username: str) -> None:
        pass

    def has_user(self, username: str) -> bool:
        return True

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        # e: change to its own folder, w: store files; nothing else.
        return perm in ("e", "w")

    def get_perms(self, username: str) -> str:
        return "ew"

    def get_msg_login(self, username: str) -> str:
        return f"{username}: store your files here"

    def get_msg_quit(self, username: str) -> str:
        return "bye"


class _UploadFile:
    """What pyftpdlib writes a received file to: an `Upload` (limits, hash, fsync)."""

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.name = str(upload.target)
        self.closed = False

    def write(self, chunk: bytes) -> int:
        try:
            self.upload.write(chunk)
        except UploadRefused as refused:
            log.warning("FTP upload %s refused: %s", self.name, refused)
            raise OSError(refused.errno, str(refused)) from refused
        return len(chunk)

    def close(self) -> None:
        # The data connection ended; the handler finishes or aborts the upload.
        self.closed = True


class _ChargerFolder(AbstractedFS):  # type: ignore[misc]
    """Only new files in the charger's own folder, by safe names."""

    def open(self, filename: str, mode: str) -> Any:
        handler: UploadHandler = self.cmd_channel
        if "w" not in mode or "+" in mode:
            raise OSError(errno.EACCES, "files can only be stored whole, not read or resumed")
        path = Path(filename)
        try:
            name = safe_name(path.name)
        except FileNameError as error:
            raise OSError(errno.EACCES, str(error)) from error
        if Path(self.realpath(str(path.parent))) != Path(self.realpath(self.root)):
            raise OSError(errno.EACCES, "files go in the folder you logged in to")
        try:
            upload = handler.area.start(handler.username, name)
        except UploadRefused as refused:
            log.warning("FTP upload %s from %s refused: %s", name, handler.username, refused)
            raise OSError(refused.errno, str(refused)) from refused
        handler.uploads[str(upload.target)] = upload
        return _UploadFile(upload)


class _AfterRecordDTP(DTPHandler):  # type: ignore[misc]
    """Holds back "226 Transfer complete" of a received file: the control connection
    answers once the file is durable and recorded (UploadHandler.on_file_received)."""

    def close(self) -> None:
        answer: tuple[Any, ...] = getattr(self, "_resp", ())
        received = not self._closed and self.receive and self.transfer_finished
        if received and answer and str(answer[0]).startswith("226"):
            self._resp = ()
        super().close()


class UploadHandler(FTPHandler):  # type: ignore[misc]
    area: UploadArea
    store: StoreWriter
    loop: asyncio.AbstractEventLoop
    dtp_handler = _AfterRecordDTP
    abstracted_fs = _ChargerFolder
    banner = "ocpp-edge upload server"
    use_sendfile = False

    def __init__(self, *arguments: Any, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        self.uploads: dict[str, Upload] = {}

    def ftp_APPE(self, file: str) -> None:
        self.respond("502 appending is not offered: store the whole file")

    def ftp_STOU(self, line: str) -> None:
        self.respond("502 unique names are not offered: store the file by its name")

    def on_file_received(self, file: str) -> None:
        upload = self.uploads.pop(file, None)
        if upload is None:
            self.respond("451 the file was not received")
            return
        try:
            size, sha256 = upload.finish()
        except (UploadRefused, OSError) as error:
            upload.abort()
            log.warning("FTP upload %s from %s not kept: %s", file, self.username, error)
            self.respond(f"452 not kept: {error}")
            return
        charger_id, name = upload.charger_id, upload.name

        def record(db: Any) -> None:
            files.record_received_file(db, charger_id, name, size, sha256, "ftp", utc_now_text())

        try:
            recorded = asyncio.run_coroutine_threadsafe(_run(self.store, record), self.loop)
            recorded.result(RECORD_TIMEOUT_S)
        except Exception:
            # Not recorded: not kept either, and the charger is told to try again.
            upload.target.unlink(missing_ok=True)
            log.exception("FTP upload %s from %s could not be recorded", name, charger_id)
            self.respond("451 the upload could not be recorded: try again")
            return
        log.info("%s uploaded %s (%d bytes) over FTP", charger_id, name, size)
        self.respond("226 Transfer complete.")

    def on_incomplete_file_received(self, file: str) -> None:
        upload = self.uploads.pop(file, None)
        if upload is not None:
            upload.abort()

    def on_disconnect(self) -> None:
        for upload in self.uploads.values():
            upload.abort()
        self.uploads.clear()


async def _run(store: StoreWriter, work: Any) -> None:
    await store.run(work)


# How long the daemon's stop waits for the FTP thread (a daemon thread: not joined at exit).
STOP_SECONDS = 1.0


class UploadFtpServer:
    """`async with UploadFtpServer(...) as ftp:`: listening until the block ends."""

    def __init__(
        self,
        area: UploadArea,
        tokens: UploadTokens,
        settings: FilesSettings,
        store: StoreWriter,
        port: int | None = None,
    ) -> None:
        self.area, self.tokens, self.settings, self.store = area, tokens, settings, store
        self.host = settings.host
        self.port = settings.ftp_port if port is None else port
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: ThreadedFTPServer | None = None

    async def __aenter__(self) -> UploadFtpServer:
        settings = self.settings
        data_handler = type(
            "ChargerUploadData", (_AfterRecordDTP,), {"timeout": int(settings.body_timeout)}
        )
        handler = type(
            "ChargerUploadHandler",
            (UploadHandler,),
            {
                "authorizer": ChargerAuthorizer(self.area, self.tokens),
                "area": self.area,
                "store": self.store,
                "loop": asyncio.get_running_loop(),
                "dtp_handler": data_handler,
                # Idle control connection, stalled data connection: both bounded.
                "timeout": max(int(settings.header_timeout * 6), 1),
            },
        )
        server = ThreadedFTPServer((self.host, self.port), handler)
        server.max_cons = settings.max_connections
        server.max_cons_per_ip = settings.max_connections_per_source
        self._server = server
        self.port = server.address[1]
        self._thread = threading.Thread(target=self._serve, name="ftp-uploads", daemon=True)
        self._thread.start()
        log.info("FTP uploads on ftp://%s:%s", self.host, self.port)
        return self

    def _serve(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            self._server.serve_forever(timeout=0.2, blocking=False, handle_exit=False)
        self._server.close_all()

    async def __aexit__(self, *exc_info: Any) -> None:
        # The thread sees this within one poll (0.2 s), then closes every connection:
        # an upload cut off half-way is deleted (on_incomplete_file_received).
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, STOP_SECONDS)
            if self._thread.is_alive():
                log.warning("FTP server still closing after %g s: not waited for", STOP_SECONDS)
