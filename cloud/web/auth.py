"""Who is signed in to the fleet web view, and what they may do.

- **Sessions** are signed cookies (itsdangerous, HMAC-SHA1 over a key every replica
  shares): the user's id, a CSRF token, when the session started and, once signed in,
  the session's secret, whose SHA-256 names its row in the store (`web_sessions`,
  cloud/store/users.py). HttpOnly, SameSite=Lax, Secure when `web.secure_cookies`. Every
  request looks the row up: a session lasts while its row does. It ends after
  `web.idle_timeout` without a request (cookie and row are renewed as it is used) and
  after `web.session_lifetime` whatever happens; signing out ends this session only; a
  user ends any other of theirs from their account page; an admin ends all of a user's;
  a password change ends every other; disabling the user ends them all.
- **CSRF**: every POST carries the session's token, as the form field `csrf_token` or the
  `X-CSRF-Token` header (htmx sends it, see base.html), and no other Origin.
- **Roles**: viewer < operator < admin; every page and fragment states the least it needs
  with `Depends(require("viewer"))`. A user is held to their fleet by the queries (every
  one takes the fleet): another fleet's edge is 404, as one that does not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.responses import Response

from cloud.settings import WebSettings
from cloud.store import users as user_store
from cloud.store.users import User

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from cloud.web.app import WebContext

COOKIE_NAME = "ocpp_cloud_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
ROLE_RANK: dict[str, int] = {"viewer": 0, "operator": 1, "admin": 2}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A cookie older than this is signed again (sliding idle expiry) on the next page.
REISSUE_AFTER_S = 60.0
COOKIE_PATH = "/web"
SECURITY_HEADERS = {
    # Every script, style and connection from this server only: nothing leaves the site.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


# The longest session secret a cookie may carry (token_urlsafe(32) makes 43 characters).
MAX_SECRET = 64


@dataclass(frozen=True)
class Session:
    user_id: int | None  # None: not signed in yet (the sign-in form's CSRF token)
    csrf: str
    started_at: float  # Unix time
    # Signed in: what names the session's row in the store (by its SHA-256).
    secret: str | None = None

    @classmethod
    def anonymous(cls) -> Session:
        return cls(None, secrets.token_urlsafe(24), time.time())

    def signed_in(self, user_id: int) -> Session:
        # A new token at sign-in: one learned before cannot be used after.
        return Session(user_id, secrets.token_urlsafe(24), time.time(), secrets.token_urlsafe(32))

    @property
    def digest(self) -> str:
        """The SHA-256 of the session's secret, as the store names the session."""
        return hashlib.sha256((self.secret or "").encode()).hexdigest()


class WebRefusal(Exception):
    """A request the view does not serve; answered as a page (or for htmx, a header)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignInNeeded(WebRefusal):
    def __init__(self) -> None:
        super().__init__(401, "Sign in to see this page.")


class SessionCookies:
    """Session cookies signed with the shared secret."""

    def __init__(self, secret: str, settings: WebSettings) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="ocpp-cloud web session")
        self.settings = settings

    def encode(self, session: Session) -> str:
        return self._serializer.dumps(
            [session.user_id, session.csrf, session.started_at, session.secret]
        )

    def decode(self, text: str | None) -> tuple[Session, float] | None:
        """The session and the seconds since its cookie was signed; None when the cookie
        is forged, malformed, idle too long or past the session's lifetime."""
        if not text or len(text) > 512:
            return None
        try:
            value, signed_at = self._serializer.loads(
                text, max_age=int(self.settings.idle_timeout), return_timestamp=True
            )
        except (BadSignature, SignatureExpired, ValueError, TypeError):
            return None
        if not (isinstance(value, list) and len(value) == 4):
            return None
        user_id, csrf, started_at, secret = value
        anonymous = user_id is None and secret is None
        signed_in = (
            isinstance(user_id, int)
            and not isinstance(user_id, bool)
            and isinstance(secret, str)
            and 0 < len(secret) <= MAX_SECRET
        )
        if not (
            (anonymous or signed_in)
            and isinstance(csrf, str)
            and isinstance(started_at, int | float)
        ):
            return None
        now = time.time()
        if now - started_at > self.settings.session_lifetime:
            return None
        return Session(user_id, csrf, float(started_at), secret), now - signed_at.timestamp()

    def expires_at(self, session: Session, now: float) -> datetime:
        """When the session ends if it is not used again: idle, or its lifetime over."""
        end = min(
            now + self.settings.idle_timeout, session.started_at + self.settings.session_lifetime
        )
        return datetime.fromtimestamp(end, UTC)

    def set(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE_NAME,
            self.encode(session),
            max_age=int(self.settings.idle_timeout),
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=self.settings.secure_cookies,
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(
            COOKIE_NAME,
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=self.settings.secure_cookies,
        )


def web_context(request: Request) -> WebContext:
    context: WebContext = request.state.web_context
    return context


def session_of(request: Request) -> Session | None:
    """The request's session (signed in or not), as its cookie says."""
    if hasattr(request.state, "web_session"):
        found: Session | None = request.state.web_session
        return found
    decoded = web_context(request).cookies.decode(request.cookies.get(COOKIE_NAME))
    session = None
    if decoded is not None:
        session, age = decoded
        if age > REISSUE_AFTER_S:
            request.state.reissue_session = session
    request.state.web_session = session
    return session


def require(role: Literal["viewer", "operator", "admin"]) -> Callable[[Request], Awaitable[User]]:
    """A dependency: the signed-in user when they have at least `role` (and, for a POST,
    the right CSRF token); else the request is refused (WebRefusal)."""
    least = ROLE_RANK[role]

    async def signed_in_user(request: Request) -> User:
        context = web_context(request)
        session = session_of(request)
        user = await session_user(context, session)
        if session is None or user is None:
            raise SignInNeeded()
        if getattr(request.state, "reissue_session", None) is not None:
            await renew_session(context, session)  # as its cookie is signed again
        if ROLE_RANK[user.role] < least:
            raise WebRefusal(403, f"This needs the {role} role; you are {user.role}.")
        if request.method not in SAFE_METHODS:
            await check_csrf(request, session)
        request.state.web_user = user
        return user

    return signed_in_user


# What a route declares it needs: `user: Viewer` (or Operator, Admin).
Viewer = Annotated[User, Depends(require("viewer"))]
Operator = Annotated[User, Depends(require("operator"))]
Admin = Annotated[User, Depends(require("admin"))]


async def renew_session(context: WebContext, session: Session) -> None:
    """The session is in use: its row's expiry moves on (within its lifetime)."""
    await asyncio.to_thread(
        user_store.touch_session,
        context.engine,
        session.digest,
        datetime.now(UTC),
        context.cookies.expires_at(session, time.time()),
    )


async def session_user(context: WebContext, session: Session | None) -> User | None:
    """The signed-in, active user of the session while it lasts in the store; None when
    it is no signed-in session or has ended."""
    if session is None or session.user_id is None or session.secret is None:
        return None
    user = await asyncio.to_thread(
        user_store.session_user,
        context.engine,
        session.user_id,
        session.digest,
        datetime.now(UTC),
    )
    return user if user is not None and user.active else None


async def check_csrf(request: Request, session: Session) -> None:
    """A state-changing request must come from our own page: same origin, and the
    session's token in the form or the header."""
    origin = request.headers.get("origin")
    host = request.headers.get("host", "").lower()
    if origin not in (None, "null") and urlsplit(origin).netloc.lower() != host:
        raise WebRefusal(403, "A request from another site cannot change anything here.")
    offered = request.headers.get(CSRF_HEADER)
    if offered is None:
        form = await request.form()
        field = form.get(CSRF_FIELD)
        offered = field if isinstance(field, str) else None
    if offered is None or not hmac.compare_digest(offered.encode(), session.csrf.encode()):
        raise WebRefusal(403, "The form has expired or did not come from this site: reload it.")


def sign_in_path(request: Request) -> str:
    """The sign-in page, coming back to where the user was (a path of ours only)."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return f"{COOKIE_PATH}/login?next={quote(target, safe='/')}"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path under /web/, never another site."""
    if not target or not target.startswith(COOKIE_PATH + "/") or target.startswith("//"):
        return COOKIE_PATH + "/"
    if "\\" in target or any(ord(character) < 32 for character in target):
        return COOKIE_PATH + "/"
    return target
