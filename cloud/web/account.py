"""A user's own account (`/web/account`): their sessions (where and when they signed in,
last seen), each of the others ended on its own or all at once, and their password
changed (which ends every other session). Admins end all sessions of a user of their
fleet from the users page. Every change is in the audit log.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cloud.store import sign_ins
from cloud.store import users as user_store
from cloud.store.users import User
from cloud.web import audit
from cloud.web.auth import COOKIE_PATH, Admin, Session, Viewer, WebRefusal, session_of
from cloud.web.passwords import (
    MAX_LENGTH,
    WeakPassword,
    check_password_rules,
    hash_password,
    verify_password,
)

if TYPE_CHECKING:
    from cloud.web.app import WebContext

ACCOUNT = f"{COOKIE_PATH}/account"
# Ids of rows in the store: an integer column.
LARGEST_ID = 2**31 - 1


def _session(request: Request) -> Session:
    session = session_of(request)
    assert session is not None and session.secret is not None  # checked by the role
    return session


def account_values(context: WebContext, user: User, session: Session) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "sessions": user_store.list_sessions(context.engine, user.user_id, now),
        "this_session": session.digest,
        "now": now,
        "error": None,
        "notice": None,
    }


def add_routes(router: APIRouter, context: WebContext) -> None:
    async def account_page(
        request: Request,
        user: User,
        *,
        error: str | None = None,
        notice: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        values = await asyncio.to_thread(account_values, context, user, _session(request))
        values |= {"error": error, "notice": notice}
        return context.page(request, "account.html", values, status)

    def back_to_account() -> RedirectResponse:
        return RedirectResponse(ACCOUNT, status_code=303)

    @router.get(ACCOUNT)
    async def account(request: Request, user: Viewer) -> HTMLResponse:
        return await account_page(request, user)

    @router.post(f"{ACCOUNT}/sessions/{{session_id}}/end")
    async def end_one_session(
        request: Request, user: Viewer, session_id: int = Path(ge=1, le=LARGEST_ID)
    ) -> Response:
        ended = await asyncio.to_thread(
            user_store.end_session, context.engine, user.user_id, session_id=session_id
        )
        if not ended:
            # Another user's session is answered as one that does not exist.
            raise WebRefusal(404, "You have no such session (it may have ended already).")
        await audit.record(context.engine, user, "session.end", user.email, {"session": session_id})
        response = back_to_account()
        context.finish(request, response)
        return response

    @router.post(f"{ACCOUNT}/sessions/end-others")
    async def end_other_sessions(request: Request, user: Viewer) -> Response:
        ended = await asyncio.to_thread(
            user_store.end_sessions, context.engine, user.user_id, _session(request).digest
        )
        await audit.record(
            context.engine, user, "sessions.end_others", user.email, {"ended": ended}
        )
        response = back_to_account()
        context.finish(request, response)
        return response

    @router.post(f"{ACCOUNT}/password")
    async def change_password(
        request: Request,
        user: Viewer,
        current: str = Form("", max_length=MAX_LENGTH),
        new: str = Form("", max_length=MAX_LENGTH),
        repeated: str = Form("", max_length=MAX_LENGTH),
    ) -> Response:
        settings = context.settings
        client = request.client.host if request.client else "unknown"
        # The current password is guessed no faster here than at the sign-in form.
        reservation = await asyncio.to_thread(
            sign_ins.reserve,
            context.engine,
            [
                sign_ins.Limit("address", client, settings.max_login_failures),
                sign_ins.Limit("account", user.email, settings.max_login_failures_per_account),
            ],
            audit.now(),
            settings.login_failure_window,
        )
        if not reservation.granted:
            wait = reservation.retry_after_s
            refusal = WebRefusal(429, f"Too many wrong passwords: try again in {wait:.0f} s.")
            refusal.retry_after = int(wait) + 1  # type: ignore[attr-defined]
            raise refusal
        found = await asyncio.to_thread(user_store.user_for_login, context.engine, user.email)
        password_hash = found[1] if found is not None else None
        if not await asyncio.to_thread(verify_password, password_hash, current):
            await audit.record(context.engine, user, "password.change_failed", user.email)
            return await account_page(
                request, user, error="The current password is wrong.", status=422
            )
        await asyncio.to_thread(sign_ins.release, context.engine, reservation)
        try:
            check_password_rules(new)
        except WeakPassword as weak:
            return await account_page(request, user, error=f"Not changed: {weak}.", status=422)
        if new != repeated:
            return await account_page(
                request, user, error="Not changed: the two new passwords differ.", status=422
            )
        new_hash = await asyncio.to_thread(hash_password, new)
        ended = await asyncio.to_thread(
            user_store.change_password,
            context.engine,
            user.user_id,
            new_hash,
            _session(request).digest,
        )
        await audit.record(context.engine, user, "password.change", user.email, {"ended": ended})
        notice = f"Password changed; {ended} other sessions ended."
        return await account_page(request, user, notice=notice)

    @router.post(f"{COOKIE_PATH}/users/{{user_id}}/sessions/end")
    async def end_users_sessions(
        request: Request, user: Admin, user_id: int = Path(ge=1, le=LARGEST_ID)
    ) -> Response:
        person = await asyncio.to_thread(user_store.user_by_id, context.engine, user_id)
        if person is None or person.fleet_id != user.fleet_id:
            raise WebRefusal(404, "There is no such user in your fleet.")
        ended = await asyncio.to_thread(user_store.end_sessions, context.engine, user_id)
        await audit.record(context.engine, user, "sessions.end_all", person.email, {"ended": ended})
        response = RedirectResponse(f"{COOKIE_PATH}/users", status_code=303)
        context.finish(request, response)
        return response
