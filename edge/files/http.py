"""The chargers' file server: GET firmware, PUT or POST diagnostics and logs.

Firmware answers stream the file (never read into memory) with Content-Length, an ETag
and a `Digest: sha-256=` header so a charger (or a person) can check the download.

Uploads go to the location the edge handed the charger in GetDiagnostics/GetLog,
`/uploads/<token>/`, as `PUT` or `POST /uploads/<token>/<file name>`: the token (edge/
files/tokens.py) says which charger may upload there and until when, so only chargers
the edge asked can upload, each into its own folder. The body is limited while it
streams in (files.max_upload_bytes), written and hashed in a thread as it arrives, and
fsynced and recorded (edge/files/uploads.py) before the 201: a charger told its upload
arrived never loses it. Answers: 201 stored, 400 bad file name, 401 no token, 403 a token
this edge did not issue or that has expired, 413 too large, 507 the charger's share or
the disk's free floor would be passed.
"""

from __future__ import annotations

import asyncio
import base64
import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from starlette.types import ASGIApp

from contract.http.body_limit import BodyLimit, RouteLimit
from contract.http.serving import ConnectionLimits, EmbeddedHttpServer
from edge.clock import utc_now_text
from edge.files.store import FileDirectory, FileNameError, safe_name
from edge.files.tokens import UploadTokens
from edge.files.uploads import Upload, UploadArea, UploadRefused
from edge.settings import FilesSettings
from edge.store import files
from edge.store.writer import StoreWriter

log = logging.getLogger(__name__)
# Bytes gathered before each write to disk (in a thread): an upload holds at most this
# much memory.
WRITE_BYTES = 256 * 1024
# A body on any other route: none is expected.
OTHER_BODY_BYTES = 4096
UPLOAD_ROUTE = r"/uploads/[^/]+/[^/]+"


def create_file_server(
    directory: FileDirectory, store: StoreWriter, area: UploadArea, tokens: UploadTokens
) -> FastAPI:
    app = FastAPI(title="ocpp-edge file server", docs_url=None, redoc_url=None)

    @app.get("/firmware/{name}")
    async def firmware(name: str) -> FileResponse:
        path = directory.firmware / _checked(name)
        sha256 = await store.run(lambda db: files.firmware_image_sha256(db, path.name))
        if sha256 is None or not path.is_file():
            raise HTTPException(404, f"no firmware image {name}")
        digest = base64.b64encode(bytes.fromhex(sha256)).decode()
        return FileResponse(
            path,
            media_type="application/octet-stream",
            headers={"Digest": f"sha-256={digest}", "ETag": f'"{sha256}"'},
        )

    async def receive(token: str, name: str, request: Request) -> dict[str, object]:
        charger_id = tokens.charger_of(token)
        if charger_id is None:
            raise HTTPException(
                403,
                "this upload location was not issued by this edge or has expired: upload "
                "to the location of a new GetDiagnostics/GetLog",
            )
        name = _checked(name)
        length = request.headers.get("content-length")
        declared = int(length) if length and length.isdigit() else None
        upload = await _start(area, charger_id, name, declared)
        try:
            size, sha256 = await _receive_body(upload, request)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(upload.abort))
            raise
        try:
            await store.run(
                lambda db: files.record_received_file(
                    db, charger_id, name, size, sha256, "http", utc_now_text()
                )
            )
        except Exception as error:
            # Not recorded: not kept either, and the charger is told to try again.
            await asyncio.to_thread(upload.target.unlink, missing_ok=True)
            log.exception("upload %s from %s could not be recorded", name, charger_id)
            raise HTTPException(503, "the upload could not be recorded: try again") from error
        log.info("%s uploaded %s (%d bytes) over HTTP", charger_id, name, size)
        return {"name": name, "size": size, "sha256": sha256}

    async def no_token(name: str) -> None:
        raise HTTPException(
            401,
            "uploads go to the location the edge gives in GetDiagnostics/GetLog "
            "(/uploads/<token>/<file name>)",
        )

    app.add_api_route("/uploads/{token}/{name}", receive, methods=["PUT", "POST"], status_code=201)
    app.add_api_route("/uploads/{name}", no_token, methods=["PUT", "POST"])
    return app


async def _start(area: UploadArea, charger_id: str, name: str, declared: int | None) -> Upload:
    try:
        return await asyncio.to_thread(area.start, charger_id, name, declared)
    except UploadRefused as refused:
        raise HTTPException(refused.status, str(refused)) from refused


async def _receive_body(upload: Upload, request: Request) -> tuple[int, str]:
    """The body written, hashed and made durable in a thread, WRITE_BYTES at a time."""
    pending = bytearray()
    try:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= WRITE_BYTES:
                await asyncio.to_thread(upload.write, bytes(pending))
                pending.clear()
        if pending:
            await asyncio.to_thread(upload.write, bytes(pending))
        return await asyncio.to_thread(upload.finish)
    except UploadRefused as refused:
        raise HTTPException(refused.status, str(refused), {"Connection": "close"}) from refused


def protect_file_server(app: FastAPI, settings: FilesSettings) -> ASGIApp:
    upload_limit = settings.max_upload_bytes
    routes = [RouteLimit.of(method, UPLOAD_ROUTE, upload_limit) for method in ("PUT", "POST")]
    return BodyLimit(app, OTHER_BODY_BYTES, routes)


def file_server(
    directory: FileDirectory,
    store: StoreWriter,
    area: UploadArea,
    tokens: UploadTokens,
    settings: FilesSettings,
) -> EmbeddedHttpServer:
    app = protect_file_server(create_file_server(directory, store, area, tokens), settings)
    limits = ConnectionLimits.of(settings)
    return EmbeddedHttpServer(app, settings.host, settings.port, limits, "file server")


def _checked(name: str) -> str:
    try:
        return safe_name(name)
    except FileNameError as error:
        raise HTTPException(400, str(error)) from error
