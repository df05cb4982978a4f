"""Who may use an HTTP API, decided before any route runs (the edge's local API and the
cloud's REST API share it).

- **The client's address** is the peer's, unless the peer is a configured reverse proxy:
  then X-Forwarded-For is read from the right, past every trusted proxy. A header from any
  other peer is ignored (anyone can write one).
- **A bearer token** admits a request. Without it, a request is served only when the API
  trusts loopback and the client is on this machine, came directly (no forwarding header
  from an untrusted peer: a reverse proxy on this machine would otherwise make everyone
  local), and passes the browser checks: its Host is a name of this API (DNS rebinding),
  and a state-changing request comes from no other origin (Origin, Sec-Fetch-Site) with a
  JSON body (a cross-site form or `no-cors` fetch cannot send one without a preflight,
  which this API never grants). A token cannot be sent by a cross-site page, so requests
  that carry it skip those checks.
- **Open routes** (enrolling, the OpenAPI document) are served to anyone.

Refusals are JSON with a sentence in `detail`: 400 Host, 401 token, 403 cross-site, 415
body type.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from contract.networks import LOOPBACK_NAMES, parse_networks

Network = IPv4Network | IPv6Network
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
JSON = frozenset({"application/json"})


@dataclass(frozen=True)
class BodyTypes:
    """Content types a route takes other than JSON (e.g. a firmware image's bytes)."""

    method: str
    path: re.Pattern[str]
    types: frozenset[str]


@dataclass(frozen=True)
class AccessPolicy:
    token: str = ""
    trust_loopback: bool = False
    # Host names besides loopback's that clients without the token may use.
    allowed_hosts: frozenset[str] = frozenset()
    trusted_proxies: tuple[Network, ...] = ()
    open_routes: tuple[re.Pattern[str], ...] = ()
    body_types: tuple[BodyTypes, ...] = ()
    # What a refused client is told to send.
    token_setting: str = "api.token"
    hosts_setting: str = "api.allowed_hosts"
    names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        names = {name.lower().rstrip(".") for name in (*LOOPBACK_NAMES, *self.allowed_hosts)}
        object.__setattr__(self, "names", frozenset(names))

    @classmethod
    def build(
        cls,
        *,
        token: str,
        trust_loopback: bool,
        bind_host: str,
        allowed_hosts: Iterable[str],
        trusted_proxies: Iterable[str],
        open_routes: Sequence[str] = (),
        body_types: Sequence[BodyTypes] = (),
    ) -> AccessPolicy:
        """A policy from settings; the address the API binds to is one of its names."""
        hosts = set(allowed_hosts)
        if bind_host not in ("0.0.0.0", "::", ""):
            hosts.add(bind_host)
        return cls(
            token=token,
            trust_loopback=trust_loopback,
            allowed_hosts=frozenset(hosts),
            trusted_proxies=tuple(parse_networks(list(trusted_proxies))),
            open_routes=tuple(re.compile(pattern) for pattern in open_routes),
            body_types=tuple(body_types),
        )


def _address(text: str) -> IPv4Address | IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted_proxy(peer: str, proxies: Sequence[Network]) -> bool:
    address = _address(peer)
    return address is not None and any(address in network for network in proxies)


def client_address(peer: str, headers: Headers, proxies: Sequence[Network]) -> str:
    """The client as the last trusted proxy saw it; the peer when it is not a proxy."""
    if not is_trusted_proxy(peer, proxies):
        return peer
    hops = [hop for value in headers.getlist("x-forwarded-for") for hop in value.split(",")]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage beyond this hop: the last address we could trust stands
        client = str(address)
        if not any(address in network for network in proxies):
            break
    return client


def _is_loopback(address: str) -> bool:
    parsed = _address(address)
    return parsed is not None and parsed.is_loopback


def _host_name(host_header: str) -> str:
    """`[::1]:8080` → `::1`, `Example.org.:80` → `example.org`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def content_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def has_body(headers: Headers) -> bool:
    length = headers.get("content-length", "").strip()
    return "transfer-encoding" in headers or (length not in ("", "0"))


class AccessGuard:
    """ASGI middleware applying an `AccessPolicy` to every HTTP request."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy
        headers = Headers(scope=scope)
        peer, port = scope.get("client") or ("unknown", 0)
        client = client_address(peer, headers, policy.trusted_proxies)
        scope = {**scope, "client": (client, port)}
        refusal = self._refusal(scope, headers, peer, client)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail = refusal
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        await JSONResponse({"detail": detail}, status_code=status, headers=extra)(
            scope, receive, send
        )

    def _refusal(
        self, scope: Scope, headers: Headers, peer: str, client: str
    ) -> tuple[int, str] | None:
        policy = self.policy
        path: str = scope["path"]
        if any(route.fullmatch(path) for route in policy.open_routes):
            return None
        needs_token = f"this API needs `Authorization: Bearer <{policy.token_setting}>`"
        offered = _bearer(headers)
        if policy.token and offered is not None:
            if hmac.compare_digest(offered, policy.token.encode()):
                return None
            return 401, f"wrong token: {needs_token}"
        forwarded_by_stranger = not is_trusted_proxy(peer, policy.trusted_proxies) and any(
            name in headers for name in FORWARDING_HEADERS
        )
        if not (policy.trust_loopback and _is_loopback(client) and not forwarded_by_stranger):
            return 401, needs_token
        return self._browser_refusal(scope, headers)

    def _browser_refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        policy = self.policy
        host = _host_name(headers.get("host", ""))
        if host not in policy.names:
            return 400, (
                f"Host {headers.get('host', '')!r} is not a name of this API: use "
                f"localhost, or add the name to {policy.hosts_setting}"
            )
        method: str = scope["method"]
        if method in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != headers["host"].lower():
            return 403, f"a request from another origin ({origin}) cannot change anything here"
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return 403, f"a {fetch_site} request cannot change anything here"
        if has_body(headers):
            accepted = JSON
            for rule in policy.body_types:
                if rule.method == method and rule.path.fullmatch(scope["path"]):
                    accepted = accepted | rule.types
            if content_type(headers) not in accepted:
                shown = " or ".join(sorted(accepted))
                return 415, f"the body must be sent as Content-Type: {shown}"
        return None


def _bearer(headers: Headers) -> bytes | None:
    """The token of `Authorization: Bearer <token>`, None without one."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode()
