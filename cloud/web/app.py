"""The fleet web view's composition: `create_web_router` builds the pages' router (cloud/api.py
includes it in the aggregator's API), with what every page shares in a `WebContext`:
the store, the templates, the session cookies and the live feed.

Routes under /web/ are open to the API's access guard (no bearer token: people sign in)
and checked here instead: every page and fragment by `require(role)`, every POST by its
CSRF token. Pages render from the store in a worker thread: a large fleet never stalls
the event loop the API and ingest share.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine

from cloud.settings import (
    AlertSettings,
    CardSettings,
    FirmwareSettings,
    SessionSettings,
    WebSettings,
)
from cloud.store import sign_ins
from cloud.store import users as user_store
from cloud.store.overview import SummaryCache
from cloud.store.secrets import shared_secret
from cloud.web import audit
from cloud.web.auth import (
    COOKIE_PATH,
    CSRF_FIELD,
    SECURITY_HEADERS,
    Session,
    SessionCookies,
    SignInNeeded,
    Viewer,
    WebRefusal,
    check_csrf,
    safe_next,
    session_of,
    session_user,
    sign_in_path,
)
from cloud.web.live import ChangeFeed, LiveView
from cloud.web.passwords import hash_password, needs_rehash, verify_password
from cloud.web.render import make_templates

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# A static file's URL carries its content's hash: it may be cached for a year.
STATIC_CACHE = "public, max-age=31536000, immutable"
SESSION_SECRET_NAME = "web-session"
MIN_SECRET_BYTES = 32
MAX_FORM_FIELD = 1024


@dataclass
class WebContext:
    """What every page of the view uses."""

    settings: WebSettings
    engine: Engine
    cookies: SessionCookies
    feed: ChangeFeed
    templates: Any = field(default_factory=make_templates)
    # Each edge's summary as last read, by its change marker (the overview's rows).
    summaries: SummaryCache = field(default_factory=SummaryCache)
    static_versions: dict[str, str] = field(default_factory=dict)
    # Pages that are live, by the `view` argument of /web/live (cloud/web/live.py).
    live_views: dict[str, LiveView] = field(default_factory=dict)
    # Told the edge whose desired state (a command) changed: the aggregator sends it now.
    on_desired_state: Callable[[str], None] = lambda edge_id: None
    # How sessions are shown: months' time zone, the offline marker, curves' length.
    sessions: SessionSettings = field(default_factory=SessionSettings)
    # Images uploaded on the campaigns page: where they go, and the fleet's key that signs
    # their manifests (None: uploads are refused; existing images can still be rolled out).
    firmware: FirmwareSettings = field(default_factory=FirmwareSettings)
    signing_key: Ed25519PrivateKey | None = None
    # Card imports' bounds.
    cards: CardSettings = field(default_factory=CardSettings)
    # The configuration's alert settings: each fleet's defaults.
    alerts: AlertSettings = field(default_factory=AlertSettings)
    # Told that a tariff change queued re-pricing: this replica starts on it now.
    on_repricing: Callable[[], None] = lambda: None

    def static_url(self, name: str) -> str:
        return f"{COOKIE_PATH}/static/{name}?v={self.static_versions.get(name, '0')}"

    def render_text(self, template: str, values: Mapping[str, Any]) -> str:
        """A template as text (pages' fragments, also for the live stream)."""
        rendered: str = self.templates.get_template(template).render(
            static=self.static_url, **values
        )
        return rendered

    def page(
        self, request: Request, template: str, values: Mapping[str, Any], status: int = 200
    ) -> HTMLResponse:
        """A page for the request's user, its session cookie signed again if due."""
        session = session_of(request)
        common = {
            "user": getattr(request.state, "web_user", None),
            "csrf_token": session.csrf if session else "",
            "csrf_field": CSRF_FIELD,
        }
        response = HTMLResponse(self.render_text(template, common | dict(values)), status)
        self.finish(request, response)
        return response

    def finish(self, request: Request, response: Response) -> None:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        reissue: Session | None = getattr(request.state, "reissue_session", None)
        if reissue is not None:
            self.cookies.set(response, reissue)


def session_secret(settings: WebSettings, engine: Engine) -> str:
    """The key that signs session cookies: the file's, else the one kept in the store."""
    if settings.session_key is not None:
        text = Path(settings.session_key).read_text().strip()
        if len(text.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"web.session_key: {settings.session_key} holds fewer than {MIN_SECRET_BYTES} bytes"
            )
        return text
    return shared_secret(engine, SESSION_SECRET_NAME, lambda: secrets.token_urlsafe(48))


def create_web_context(
    settings: WebSettings,
    engine: Engine,
    sessions: SessionSettings | None = None,
    cards: CardSettings | None = None,
    alerts: AlertSettings | None = None,
) -> WebContext:
    return WebContext(
        sessions=sessions or SessionSettings(),
        cards=cards or CardSettings(),
        alerts=alerts or AlertSettings(),
        settings=settings,
        engine=engine,
        cookies=SessionCookies(session_secret(settings, engine), settings),
        feed=ChangeFeed(engine, settings),
        static_versions=_static_versions(),
    )


def create_web_router(
    settings: WebSettings,
    engine: Engine,
    context: WebContext | None = None,
    on_desired_state: Callable[[str], None] | None = None,
    sessions: SessionSettings | None = None,
    firmware: FirmwareSettings | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    cards: CardSettings | None = None,
    alerts: AlertSettings | None = None,
    on_repricing: Callable[[], None] | None = None,
) -> APIRouter:
    """The view's routes; `install_error_pages(api)` makes its refusals pages.
    `on_desired_state(edge_id)`: a page made something for the edge to run (a command,
    a card list); `on_repricing()`: a page changed a tariff (sessions to price again).
    `firmware`, `signing_key`: where uploaded images go and the key signing them."""
    context = context or create_web_context(settings, engine, sessions, cards, alerts)
    if on_desired_state is not None:
        context.on_desired_state = on_desired_state
    if on_repricing is not None:
        context.on_repricing = on_repricing
    if firmware is not None:
        context.firmware = firmware
    if signing_key is not None:
        context.signing_key = signing_key

    async def attach(request: Request) -> None:
        request.state.web_context = context

    router = APIRouter(dependencies=[Depends(attach)], include_in_schema=False)
    _add_static(router, context)
    _add_sign_in(router, context)
    from cloud.web import (
        account,
        alert_settings_page,
        alerts_pages,
        audit_page,
        campaigns_pages,
        card_import,
        cards_pages,
        charger,
        live,
        pages,
        tariffs_pages,
    )
    from cloud.web import sessions as session_pages

    pages.add_routes(router, context)
    account.add_routes(router, context)
    charger.add_routes(router, context)
    audit_page.add_routes(router, context)
    alerts_pages.add_routes(router, context)
    alert_settings_page.add_routes(router, context)
    cards_pages.add_routes(router, context, context.on_desired_state)
    card_import.add_routes(router, context, context.on_desired_state)
    session_pages.add_routes(router, context)
    campaigns_pages.add_routes(router, context)
    tariffs_pages.add_routes(router, context)
    live.add_routes(router, context)
    return router


def install_error_pages(api: FastAPI) -> None:
    async def refused(request: Request, error: Exception) -> Response:
        assert isinstance(error, WebRefusal)
        context: WebContext | None = getattr(request.state, "web_context", None)
        htmx = request.headers.get("HX-Request") == "true"
        if isinstance(error, SignInNeeded):
            target = sign_in_path(request)
            if htmx:
                return Response(status_code=401, headers={"HX-Redirect": target})
            if request.method == "GET" and request.url.path != f"{COOKIE_PATH}/live":
                return RedirectResponse(target, status_code=303)
        if context is None:
            return HTMLResponse(error.message, status_code=error.status)
        headers = (
            {"Retry-After": str(getattr(error, "retry_after", 0))} if error.status == 429 else {}
        )
        response = context.page(
            request, "error.html", {"status": error.status, "message": error.message}, error.status
        )
        response.headers.update(headers)
        return response

    api.add_exception_handler(WebRefusal, refused)


def _static_versions() -> dict[str, str]:
    versions = {}
    for path in sorted(STATIC.rglob("*")):
        if path.is_file() and path.suffix in (".js", ".css"):
            name = path.relative_to(STATIC).as_posix()
            versions[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return versions


def _add_static(router: APIRouter, context: WebContext) -> None:
    # Only the files found at start are served: a path is looked up, never joined.
    files = {name: STATIC / name for name in context.static_versions}

    @router.get(f"{COOKIE_PATH}/static/{{name:path}}")
    async def static_file(name: str) -> Response:
        path = files.get(name)
        if path is None:
            return Response("no such file", status_code=404, media_type="text/plain")
        response = FileResponse(path, headers={"Cache-Control": STATIC_CACHE})
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _add_sign_in(router: APIRouter, context: WebContext) -> None:
    @router.get(COOKIE_PATH, include_in_schema=False)
    async def web_root() -> RedirectResponse:
        return RedirectResponse(f"{COOKIE_PATH}/", status_code=307)

    @router.get(f"{COOKIE_PATH}/login")
    async def sign_in_form(request: Request, next: str | None = None) -> Response:
        session = session_of(request)
        if await session_user(context, session) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        session = (
            session if session is not None and session.user_id is None else Session.anonymous()
        )
        request.state.web_session = session
        response = context.page(request, "login.html", {"next": safe_next(next), "error": None})
        context.cookies.set(response, session)
        return response

    @router.post(f"{COOKIE_PATH}/login")
    async def sign_in(
        request: Request,
        email: str = Form("", max_length=MAX_FORM_FIELD),
        password: str = Form("", max_length=MAX_FORM_FIELD),
        next: str = Form("", max_length=MAX_FORM_FIELD),
    ) -> Response:
        session = session_of(request)
        if session is None:
            raise WebRefusal(403, "The sign-in form has expired: reload it.")
        await check_csrf(request, session)
        client = request.client.host if request.client else "unknown"
        settings = context.settings
        # Counted before the password is checked, on every replica's behalf: requests at
        # once cannot all slip under the limit (cloud/store/sign_ins.py).
        limits = [
            sign_ins.Limit("address", client, settings.max_login_failures),
            sign_ins.Limit(
                "account", email.strip().lower(), settings.max_login_failures_per_account
            ),
        ]
        reservation = await asyncio.to_thread(
            sign_ins.reserve,
            context.engine,
            limits,
            audit.now(),
            settings.login_failure_window,
        )
        if not reservation.granted:
            wait = reservation.retry_after_s
            refusal = WebRefusal(429, f"Too many failed sign-ins: try again in {wait:.0f} s.")
            refusal.retry_after = int(wait) + 1  # type: ignore[attr-defined]
            raise refusal
        found = await asyncio.to_thread(user_store.user_for_login, context.engine, email)
        user, password_hash = found if found is not None else (None, None)
        matched = await asyncio.to_thread(verify_password, password_hash, password)
        if user is None or not matched or not user.active:
            # It stays counted; ended windows are swept meanwhile.
            await asyncio.to_thread(
                sign_ins.sweep, context.engine, audit.now(), settings.login_failure_window
            )
            if user is not None:
                await audit.record(
                    context.engine, user, "login.failed", user.email, {"address": client}
                )
            fresh = Session.anonymous()
            request.state.web_session = fresh
            response = context.page(
                request,
                "login.html",
                {"next": safe_next(next), "error": "Wrong email or password."},
                status=401,
            )
            context.cookies.set(response, fresh)
            return response
        if password_hash is not None and needs_rehash(password_hash):
            rehashed = await asyncio.to_thread(hash_password, password)
            await asyncio.to_thread(
                user_store.set_password_hash, context.engine, user.user_id, rehashed
            )
        await asyncio.to_thread(sign_ins.release, context.engine, reservation)
        new_session = session.signed_in(user.user_id)
        await asyncio.to_thread(
            user_store.start_session,
            context.engine,
            user.user_id,
            new_session.digest,
            now=audit.now(),
            expires_at=context.cookies.expires_at(new_session, new_session.started_at),
            address=client,
            agent=request.headers.get("user-agent", ""),
            most=settings.max_sessions_per_user,
        )
        await audit.record(context.engine, user, "login", user.email, {"address": client})
        request.state.reissue_session = None  # the new session's cookie replaces it
        signed_in = RedirectResponse(safe_next(next), status_code=303)
        context.cookies.set(signed_in, new_session)
        context.finish(request, signed_in)
        return signed_in

    @router.post(f"{COOKIE_PATH}/logout")
    async def sign_out(request: Request, user: Viewer) -> Response:
        # This session ends (its row goes: a copy of its cookie is worth nothing after);
        # the user's others go on. Their account page ends those.
        session = session_of(request)
        assert session is not None  # Viewer has checked it
        await asyncio.to_thread(
            user_store.end_session, context.engine, user.user_id, secret_digest=session.digest
        )
        await audit.record(context.engine, user, "logout", user.email)
        response = RedirectResponse(f"{COOKIE_PATH}/login", status_code=303)
        context.cookies.clear(response)
        response.headers.update(SECURITY_HEADERS)
        return response
