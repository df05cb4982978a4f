"""The chargers' file server: GET firmware, PUT or POST diagnostics and logs.

Firmware answers carry Content-Length, an ETag and a `Digest: sha-256=` header so a
charger (or a person) can check the download. Uploads are written to a temporary
name and renamed when complete, so a half-received file is never taken for a whole one.
"""

from __future__ import annotations

import base64
import os

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse

from edge.files.store import FileDirectory, FileNameError, record_received_file, safe_name
from edge.store.writer import StoreWriter

MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def create_file_server(directory: FileDirectory, store: StoreWriter) -> FastAPI:
    app = FastAPI(title="ocpp-edge file server", docs_url=None, redoc_url=None)

    @app.get("/firmware/{name}")
    async def firmware(name: str) -> FileResponse:
        path = directory.firmware / _checked(name)
        row = await store.run(
            lambda db: db.conn.execute(
                "SELECT sha256 FROM firmware_images WHERE name = ?", (path.name,)
            ).fetchone()
        )
        if row is None or not path.is_file():
            raise HTTPException(404, f"no firmware image {name}")
        digest = base64.b64encode(bytes.fromhex(row[0])).decode()
        return FileResponse(
            path,
            media_type="application/octet-stream",
            headers={"Digest": f"sha-256={digest}", "ETag": f'"{row[0]}"'},
        )

    async def receive(name: str, request: Request) -> dict[str, object]:
        target = directory.uploads / _checked(name)
        partial = target.with_name(f".{target.name}.part")
        size = 0
        with partial.open("wb") as file:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    file.close()
                    partial.unlink()
                    raise HTTPException(413, f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
                file.write(chunk)
        os.replace(partial, target)
        await store.run(lambda db: record_received_file(db, target, "http"))
        return {"name": target.name, "size": size}

    app.add_api_route("/uploads/{name}", receive, methods=["PUT", "POST"], status_code=201)
    return app


def _checked(name: str) -> str:
    try:
        return safe_name(name)
    except FileNameError as error:
        raise HTTPException(400, str(error)) from error
