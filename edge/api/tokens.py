"""The bearer token an HTTP API asks for when it is reachable beyond this machine
(the edge's local API, the cloud's REST API)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request


def bearer_token_check(token: str) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: with a token set, every request must carry it."""

    async def check(request: Request) -> None:
        if not token:
            return
        offered = request.headers.get("authorization", "")
        if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "this API needs `Authorization: Bearer <api.token>`")

    return check
