"""Who holds a port on this machine: nobody (it can be bound), the edge daemon (it answers
as ocpp-edge does), or another program (named when /proc tells); whether the edge daemon
is running at all, and how it sees its readers. Every probe is bounded by a timeout."""

from __future__ import annotations

import base64
import contextlib
import errno
import http.client
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from edge.settings import Settings

PROBE_SECONDS = 1.0
# What the OCPP server answers a handshake outside its path prefix (edge/ocpp/server.py).
OCPP_REFUSAL = b"chargers connect to "
# The local API's title starts so; so does the FTP server's banner.
OUR_NAME = "ocpp-edge"
# What the file server answers for a firmware image it does not have (edge/files/http.py).
FILES_REFUSAL = "no firmware image "
FILES_PROBE_PATH = "/firmware/ocpp-edge-probe"


class Service(StrEnum):
    """What the daemon serves on a port, and so how to ask it who it is."""

    OCPP = "OCPP"
    API = "local API"
    FILES = "file server"
    FTP = "FTP uploads"


@dataclass(frozen=True)
class PortState:
    """`free`: it can be bound. `daemon`: the edge daemon answers on it. Otherwise
    `problem` says why it cannot be used ("in use by mosquitto (pid 812), ...")."""

    free: bool = False
    daemon: bool = False
    problem: str = ""
    errno: int | None = None


def port_state(service: Service, host: str, port: int, *, tls: bool = False) -> PortState:
    try:
        _try_bind(host, port)
        return PortState(free=True)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            return PortState(problem=_bind_problem(host, port, error), errno=error.errno)
    if answers_as_edge(service, host, port, tls=tls):
        return PortState(daemon=True)
    holder = listening_process(port)
    if holder is not None and holder.startswith(f"{OUR_NAME} "):
        # The daemon's own process (its command name) even where the probe cannot tell,
        # e.g. OCPP security profile 3, whose handshake needs a client certificate.
        return PortState(daemon=True)
    named = f" by {holder}" if holder else ""
    return PortState(problem=f"in use{named}, not by the ocpp-edge daemon", errno=errno.EADDRINUSE)


def _try_bind(host: str, port: int) -> None:
    family, kind, protocol, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, protocol) as probe:
        # As the daemon's servers do: a connection closing (TIME_WAIT) does not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)


def _bind_problem(host: str, port: int, error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return f"{host} is not a host name or address this machine knows ({error.strerror})"
    if error.errno == errno.EACCES:
        return f"port {port} is below 1024: binding it needs privileges this user lacks"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine"
    return f"cannot bind {host}:{port}: {error.strerror or error}"


def _connect_host(host: str) -> str:
    """Where to reach a server bound to `host`: loopback for the wildcard addresses."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def answers_as_edge(service: Service, host: str, port: int, *, tls: bool = False) -> bool:
    """Does the server at host:port answer as the edge daemon's `service` does?"""
    try:
        with _connection(_connect_host(host), port, tls) as connection:
            if service is Service.OCPP:
                return OCPP_REFUSAL in _websocket_refusal(connection, host)
            if service is Service.FTP:
                return OUR_NAME.encode() in connection.recv(512)
            if service is Service.FILES:
                status, body = _http_get(connection, host, FILES_PROBE_PATH)
                return status == 404 and str(body.get("detail", "")).startswith(FILES_REFUSAL)
            status, body = _http_get(connection, host, "/openapi.json")
            return status == 200 and str(body.get("info", {}).get("title", "")).startswith(OUR_NAME)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _connection(host: str, port: int, tls: bool) -> Iterator[socket.socket]:
    connection = socket.create_connection((host, port), timeout=PROBE_SECONDS)
    try:
        if tls:
            # Only to see who answers: the certificate is the charger's business.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            connection = context.wrap_socket(connection, server_hostname=host)
        yield connection
    finally:
        connection.close()


def _websocket_refusal(connection: socket.socket, host: str) -> bytes:
    """What the server answers a WebSocket handshake for "/": no charger id, so ours
    refuses it with a sentence, and nothing is stored."""
    key = base64.b64encode(os.urandom(16)).decode()
    connection.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
        ).encode()
    )
    answer = b""
    while OCPP_REFUSAL not in answer and len(answer) < 4096:
        chunk = connection.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def _http_get(connection: socket.socket, host: str, path: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of GET `path` (FastAPI serves /openapi.json without a
    token; the file server answers a missing image with a sentence)."""
    client = http.client.HTTPConnection(host, timeout=PROBE_SECONDS)
    client.sock = connection
    client.request("GET", path)
    response = client.getresponse()
    body = json.loads(response.read(1_000_000) or b"{}")
    return response.status, body if isinstance(body, dict) else {}


def listening_process(port: int) -> str | None:
    """ "name (pid N)" of the process listening on TCP `port`, when /proc shows it (all
    processes for root, one's own otherwise)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            listening = fields[3] == "0A"  # TCP_LISTEN
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for descriptor in (process / "fd").iterdir():
                if os.readlink(descriptor) in inodes:
                    name = (process / "comm").read_text().strip()
                    return f"{name} (pid {process.name})"
    return None


def daemon_running(settings: Settings) -> str | None:
    """How we know the edge daemon of `settings` is running (its local API, OCPP server
    or tap socket answers), or None when nothing of it answers."""
    ocpp = settings.ocpp
    if settings.api.port and answers_as_edge(Service.API, settings.api.host, settings.api.port):
        return f"its local API answers on {_connect_host(settings.api.host)}:{settings.api.port}"
    tls = ocpp.security_profile >= 2
    if answers_as_edge(Service.OCPP, ocpp.host, ocpp.port, tls=tls):
        return f"its OCPP server answers on {_connect_host(ocpp.host)}:{ocpp.port}"
    socket_path = settings.taps.socket_path(settings.store.path)
    if socket_path.exists():
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client,
        ):
            client.settimeout(PROBE_SECONDS)
            client.connect(str(socket_path))
            return f"its tap socket {socket_path} answers"
    return None


def daemon_reader_states(settings: Settings) -> dict[str, tuple[bool | None, str]] | None:
    """{reader id: (online, reason)} from the daemon's local API; None when it is off or
    does not answer."""
    views = _ask_daemon(settings, "/api/readers")
    if not isinstance(views, list):
        return None
    return {str(view["id"]): (view["online"], str(view["reason"])) for view in views}


def daemon_sync_state(settings: Settings) -> dict[str, Any] | None:
    """The running daemon's cloud link (`GET /api/sync`); None when it does not answer."""
    state = _ask_daemon(settings, "/api/sync")
    return state if isinstance(state, dict) else None


def _ask_daemon(settings: Settings, path: str) -> Any:
    api = settings.api
    if not api.port:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(api.host, api.host)
    request = urllib.request.Request(f"http://{host}:{api.port}{path}")
    if api.token:
        request.add_header("Authorization", f"Bearer {api.token}")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_SECONDS) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
