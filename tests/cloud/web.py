"""A fleet for the web view's tests: fleets, users and edges in a real store, and a
browser-like client (cookies, the CSRF token read from the page) on the real ASGI app."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from cloud.api import create_cloud_api, protect_cloud_api
from cloud.settings import CloudSettings
from cloud.store import users
from cloud.store.ingest import record_status, store_batch
from cloud.web.passwords import hash_password
from tests.cloud import payloads

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# One hash for every test user: argon2 costs ~0.1 s a hash by design.
_HASH = hash_password(PASSWORD)


def add_user(engine: Engine, email: str, role: str, fleet_id: int) -> users.User:
    return users.add_user(engine, email, _HASH, role, fleet_id)


def charger_events(charger_id: str, statuses: list[tuple[int, str, str]]) -> list[dict[str, Any]]:
    """A boot, a connection and each connector's (id, status, error code)."""
    data: list[dict[str, Any]] = [
        {"kind": "charger.boot", "charger_id": charger_id, "vendor": "ACME", "model": "AC22"},
        {"kind": "charger.connection", "charger_id": charger_id, "connected": True},
    ]
    for connector_id, status, error_code in statuses:
        data.append(
            {
                "kind": "charger.status",
                "charger_id": charger_id,
                "connector_id": connector_id,
                "status": status,
                "error_code": error_code,
            }
        )
    return data


def sync_edge(engine: Engine, edge_id: str, data: list[dict[str, Any]], first_seq: int = 1) -> None:
    """Store events as the edge's batch would bring them."""
    events = [payloads.event(first_seq + index, item) for index, item in enumerate(data)]
    result = store_batch(engine, edge_id, payloads.batch(edge_id, events))
    assert result.rejected is None and not result.quarantined, result


def set_presence(engine: Engine, edge_id: str, state: str, **fields: Any) -> None:
    assert record_status(engine, edge_id, payloads.status(state, **fields))


def web_settings(**web: Any) -> CloudSettings:
    return CloudSettings(api={"token": "machine-token"}, web=web)


class Browser:
    """What a person's browser does with the view: keeps its cookies, sends forms with the
    page's CSRF token."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.csrf = ""

    async def get(self, path: str, **options: Any) -> httpx.Response:
        response = await self.client.get(path, **options)
        found = CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    async def post(
        self, path: str, data: dict[str, str | list[str]], **options: Any
    ) -> httpx.Response:
        return await self.client.post(path, data={"csrf_token": self.csrf} | data, **options)

    async def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        await self.get("/web/login")
        response = await self.post("/web/login", {"email": email, "password": password})
        if response.status_code == 303:
            await self.get("/web/")
        return response


@asynccontextmanager
async def browser(
    engine: Engine, settings: CloudSettings | None = None, client: str = "127.0.0.1"
) -> AsyncIterator[Browser]:
    settings = settings or web_settings()
    api = create_cloud_api(settings, engine, Ed25519PrivateKey.generate())
    app = protect_cloud_api(
        api, settings.api, settings.firmware.max_image_bytes, settings.cards.max_import_bytes
    )
    transport = httpx.ASGITransport(app=app, client=(client, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://cloud.test") as http:
        yield Browser(http)


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of a server-sent event stream, as a browser's EventSource joins them."""
    name, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
