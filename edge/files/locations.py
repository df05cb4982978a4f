"""Filling in the edge's own file server in commands that name a file location.

UpdateFirmware/SignedUpdateFirmware may name an `image` the edge holds instead of a
URL; GetDiagnostics/GetLog may ask for `location` "edge" (HTTP) or "edge-ftp".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from edge.files.store import safe_name
from edge.ocpp.commands import InvalidArguments
from edge.settings import FilesSettings


def resolve_file_locations(
    action: str, arguments: dict[str, Any], files: FilesSettings
) -> dict[str, Any]:
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
        arguments["location"] = upload_location(str(arguments["location"]), files)
    if action == "GetLog":
        log = dict(arguments.get("log") or {})
        remote = log.get("remoteLocation", log.get("remote_location"))
        if remote in ("edge", "edge-ftp"):
            log.pop("remote_location", None)
            log["remoteLocation"] = upload_location(str(remote), files)
            arguments["log"] = log
    return arguments


def upload_location(kind: str, files: FilesSettings) -> str:
    if kind == "edge-ftp":
        if not files.ftp_port:
            raise InvalidArguments("FTP uploads are off (files.ftp_port = 0)")
        host = files.base_url().split("://", 1)[1].rsplit(":", 1)[0]
        credentials = f"{quote(files.ftp_user, safe='')}:{quote(files.ftp_password, safe='')}"
        return f"ftp://{credentials}@{host}:{files.ftp_port}/"
    if not files.port:
        raise InvalidArguments("the file server is off (files.port = 0)")
    return f"{files.base_url()}/uploads"
