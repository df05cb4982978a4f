"""The audit log page (`/web/audit`, admins): who did what in the fleet (sign-ins,
commands, card changes, campaigns), newest first, a page at a time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from cloud.store import audit as audit_store
from cloud.web.auth import Admin

if TYPE_CHECKING:
    from cloud.web.app import WebContext

PAGE_SIZE = 50


def add_routes(router: APIRouter, context: WebContext) -> None:
    @router.get("/web/audit")
    async def audit_log(
        request: Request,
        user: Admin,
        before: int | None = Query(None, ge=1, le=2**63 - 1),
    ) -> HTMLResponse:
        # One more than shown: whether an older page exists.
        entries = await asyncio.to_thread(
            audit_store.page, context.engine, user.fleet_id, before, PAGE_SIZE + 1
        )
        shown = entries[:PAGE_SIZE]
        older = shown[-1].entry_id if len(entries) > PAGE_SIZE else None
        values = {
            "entries": shown,
            "older": older,
            "first_page": before is None,
            "now": datetime.now(UTC),
        }
        return context.page(request, "audit.html", values)
