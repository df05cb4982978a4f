"""What one HTTP server grants a client, as a settings section both the edge's servers
(local API, file server) and the cloud's API extend, and an API's own keys; served by
contract/http/serving.py. Kept apart from it so that reading settings loads no uvicorn."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from contract.networks import is_loopback_host, parse_networks
from contract.sections import Section


class HttpServerLimits(Section):
    """What one HTTP server grants a client (contract/http/serving.py enforces it)."""

    header_timeout: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Seconds a client has to send a request's headers (also while idle).",
    )
    body_timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds of grace to send a request's body..."
    )
    min_body_rate: int = Field(
        4096, ge=1, description="...plus one second per this many bytes of it received."
    )
    send_timeout: float = Field(
        60.0, gt=0, le=3600, description="Seconds a client may leave our answer unread."
    )
    keep_alive_timeout: int = Field(
        5, ge=1, le=600, description="Seconds an idle kept-alive connection stays open."
    )
    max_header_bytes: int = Field(
        16384, ge=1024, le=1048576, description="Request line and headers, in bytes."
    )
    max_connections: int = Field(100, ge=1, description="Open connections, all clients.")
    max_connections_per_source: int = Field(
        16, ge=1, description="Open connections from one client address."
    )


class ApiServerSettings(HttpServerLimits):
    """An HTTP API's keys: the edge's local API and the cloud's REST API extend it with
    their port and their own words. A token is required once it binds beyond loopback."""

    host: str = Field("127.0.0.1", description="The API binds here; loopback by default.")
    port: int = Field(0, ge=0, le=65535, description="0 turns the API off.")
    token: str = Field("", description="Bearer token; required when host is not loopback.")
    allowed_hosts: list[str] = Field(
        [], description="Host names clients without the token may use besides loopback's."
    )
    trusted_proxies: list[str] = Field(
        [], description="Reverse proxies whose X-Forwarded-For is believed (addresses, CIDRs)."
    )
    max_body_bytes: int = Field(
        1048576, ge=1024, description="The largest request body, in bytes (413 beyond)."
    )

    @model_validator(mode="after")
    def token_when_exposed(self) -> Self:
        if self.port and not is_loopback_host(self.host) and not self.token:
            raise ValueError(f"the API binds to {self.host}, beyond this machine: set api.token")
        parse_networks(self.trusted_proxies)
        return self
