"""What one HTTP server grants a client, as a settings section both the edge's servers
(local API, file server) and the cloud's API extend; contract/http/serving.py enforces it.
Kept apart from serving.py so that reading settings does not load uvicorn."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HttpServerLimits(BaseModel):
    """What one HTTP server grants a client (contract/http/serving.py enforces it)."""

    model_config = ConfigDict(extra="forbid")

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
