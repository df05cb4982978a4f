"""Filling in the edge's own file server in commands that name a file location.

UpdateFirmware/SignedUpdateFirmware may name an `image` the edge holds instead of a
URL; GetDiagnostics/GetLog may ask for `location` "edge" (HTTP) or "edge-ftp": the edge
fills in a location that only this charger can upload to, for `files.upload_token_hours`
(edge/files/tokens.py): `http://EDGE:8081/uploads/<token>` (the charger PUTs or POSTs
`<location>/<file name>`) or `ftp://<charger id>:<token>@EDGE:PORT/`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from edge.files.store import safe_name
from edge.files.tokens import UploadTokens
from edge.ocpp.commands import InvalidArguments
from edge.settings import FilesSettings


def resolve_file_locations(
    action: str,
    arguments: dict[str, Any],
    files: FilesSettings,
    charger_id: str | None = None,
) -> dict[str, Any]:
    """`arguments` with the edge's own locations filled in; an upload location needs the
    charger it is for (InvalidArguments without one)."""
    arguments = dict(arguments)
    if action in ("UpdateFirmware", "SignedUpdateFirmware") and "image" in arguments:
        image = safe_name(str(arguments.pop("image")))
        if not files.port:
            raise InvalidArguments("the file server is off (files.port = 0)")
        if not (files.directory / "firmware" / image).is_file():
            raise InvalidArguments(f"no firmware image {image}: add it with ocpp-edge firmware add")
        url = f"{files.base_url()}/firmware/{image}"
        if action == "UpdateFirmware":
            arguments["location"] = url
        else:
            arguments["firmware"] = {**arguments.get("firmware", {}), "location": url}
    if action == "GetDiagnostics" and arguments.get("location") in ("edge", "edge-ftp"):
        arguments["location"] = upload_location(str(arguments["location"]), files, charger_id)
    if action == "GetLog":
        log = dict(arguments.get("log") or {})
        remote = log.get("remoteLocation", log.get("remote_location"))
        if remote in ("edge", "edge-ftp"):
            log.pop("remote_location", None)
            log["remoteLocation"] = upload_location(str(remote), files, charger_id)
            arguments["log"] = log
    return arguments


def upload_location(kind: str, files: FilesSettings, charger_id: str | None) -> str:
    """Where `charger_id` (and only it) may upload: "edge" over HTTP, "edge-ftp" over FTP."""
    if charger_id is None:
        raise InvalidArguments("an upload location is made for one charger: name it")
    if kind == "edge-ftp" and not files.ftp_port:
        raise InvalidArguments("FTP uploads are off (files.ftp_port = 0)")
    if kind == "edge" and not files.port:
        raise InvalidArguments("the file server is off (files.port = 0)")
    tokens = UploadTokens.load_or_create(files.directory)
    token = tokens.issue(charger_id, files.upload_token_hours * 3600)
    if kind == "edge-ftp":
        host = files.base_url().split("://", 1)[1].rsplit(":", 1)[0]
        credentials = f"{quote(charger_id, safe='')}:{quote(token, safe='')}"
        return f"ftp://{credentials}@{host}:{files.ftp_port}/"
    return f"{files.base_url()}/uploads/{token}"
