"""A size limit on request bodies, per route, enforced while the body streams in (the
edge's local API and file server, the cloud's REST API).

A declared Content-Length beyond the limit is answered 413 before a byte of the body is
read; a chunked body (no Content-Length) is counted as it arrives and answered 413 the
moment it passes the limit, whatever the route was doing with it. Either way the
connection is closed after the answer, so the rest is never read. A route that streams
its body (an upload) therefore never holds more than the limit, and a route that reads
it whole never holds more than the limit in memory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class RouteLimit:
    """Bodies of `method` requests to paths matching `path` may hold `limit` bytes."""

    method: str
    path: re.Pattern[str]
    limit: int

    @classmethod
    def of(cls, method: str, path: str, limit: int) -> RouteLimit:
        return cls(method, re.compile(path), limit)


class BodyTooLarge(Exception):
    """Raised into the route reading a body that passed its limit (already answered 413)."""


class BodyLimit:
    """ASGI middleware: `default` bytes for every body, `routes` for the exceptions."""

    def __init__(self, app: ASGIApp, default: int, routes: Sequence[RouteLimit] = ()) -> None:
        self.app = app
        self.default = default
        self.routes = tuple(routes)

    def limit_for(self, method: str, path: str) -> int:
        for route in self.routes:
            if route.method == method and route.path.fullmatch(path):
                return route.limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _answer(scope, send, 400, f"Content-Length {declared!r} is not a number")
                return
            if int(declared) > limit:
                await _answer(scope, send, 413, _too_large(limit))
                return
        received = 0
        answered = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not response_started and not answered:
                        answered = True
                        await _answer(scope, send, 413, _too_large(limit))
                    raise BodyTooLarge(_too_large(limit))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if answered:
                return  # our 413 went first; whatever the route says after is dropped
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not answered:
                raise  # the route had answered already: the connection ends here


def _too_large(limit: int) -> str:
    return f"the body is larger than this route takes ({limit} bytes)"


async def _answer(scope: Scope, send: Send, status: int, detail: str) -> None:
    # Connection: close: the server stops reading what the client still sends.
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, nothing, send)
