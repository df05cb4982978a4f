"""Live pages: one server-sent event stream per open page (`/web/live?view=...`), which
pushes the page's fragments, re-rendered, whenever what they show has changed.

How a replica knows: every transaction that writes about an edge raises the edge's
`revision` (cloud/store/statements.py, `lock_edge`, on the row it locks anyway, so no
writer waits for another because of it). The replica's `ChangeFeed` reads every edge's
revision every `web.live_poll_interval` seconds, while at least one page is open, and
wakes the streams whose fleet (overview) or edge (site page) changed. Any replica sees
what any other stored, on SQLite and PostgreSQL alike, with one small query per poll
however many pages are open. Streams also refresh every REFRESH_S seconds, so that ages
and lags keep moving while nothing is stored (an edge that just went quiet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sse_starlette import EventSourceResponse

from cloud.settings import WebSettings
from cloud.store.overview import edge_revisions
from cloud.store.users import User
from cloud.web.auth import (
    REISSUE_AFTER_S,
    SECURITY_HEADERS,
    Viewer,
    WebRefusal,
    renew_session,
    session_of,
    session_user,
)

if TYPE_CHECKING:
    from cloud.web.app import WebContext

log = logging.getLogger(__name__)
# Seconds between refreshes of a live page when nothing changed.
REFRESH_S = 30.0
# Seconds between SSE comments that keep proxies from closing an idle stream.
PING_S = 15
# Back-off after a failed poll (the store away): the streams keep their last state.
POLL_RETRY_S = 5.0


@dataclass(eq=False)
class Subscription:
    user_id: int
    fleet_id: int
    edge_id: str | None  # None: every edge of the fleet
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, fleet_id: int | None, edge_id: str) -> bool:
        return fleet_id == self.fleet_id and self.edge_id in (None, edge_id)


class ChangeFeed:
    """Polls the store's change marker while any page of this replica is live."""

    def __init__(self, engine: Engine, settings: WebSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.polls = 0
        self._subscriptions: set[Subscription] = set()
        self._per_user: Counter[int] = Counter()
        self._poller: asyncio.Task[None] | None = None

    @property
    def streams(self) -> int:
        return len(self._subscriptions)

    def refusal(self, user: User) -> WebRefusal | None:
        """Why `user` may not open one more live page now; None when they may."""
        if len(self._subscriptions) >= self.settings.max_live_streams:
            return WebRefusal(429, "Too many live pages are open on this server: try later.")
        if self._per_user[user.user_id] >= self.settings.max_live_streams_per_user:
            return WebRefusal(429, "You have too many live pages open: close some.")
        return None

    @contextlib.asynccontextmanager
    async def subscribe(self, user: User, edge_id: str | None) -> AsyncIterator[Subscription]:
        subscription = Subscription(user.user_id, user.fleet_id, edge_id)
        self._subscriptions.add(subscription)
        self._per_user[user.user_id] += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="web-live-poll")
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            self._per_user[user.user_id] -= 1
            if self._per_user[user.user_id] <= 0:
                del self._per_user[user.user_id]
            if not self._subscriptions and self._poller is not None:
                self._poller.cancel()
                self._poller = None

    async def _poll(self) -> None:
        previous: dict[str, tuple[int | None, int]] | None = None
        while True:
            try:
                current = await asyncio.to_thread(edge_revisions, self.engine)
            except SQLAlchemyError as error:
                log.warning("live view: cannot read the change marker: %s", error)
                await asyncio.sleep(POLL_RETRY_S)
                continue
            self.polls += 1
            if previous is not None:
                self._wake(previous, current)
            previous = current
            await asyncio.sleep(self.settings.live_poll_interval)

    def _wake(
        self,
        previous: dict[str, tuple[int | None, int]],
        current: dict[str, tuple[int | None, int]],
    ) -> None:
        changed: set[tuple[int | None, str]] = set()
        for edge_id, (fleet_id, revision) in current.items():
            before = previous.get(edge_id)
            if before != (fleet_id, revision):
                changed.add((fleet_id, edge_id))
                if before is not None and before[0] != fleet_id:
                    changed.add((before[0], edge_id))  # it left that fleet
        if not changed:
            return
        for subscription in self._subscriptions:
            if any(subscription.wants(fleet_id, edge_id) for fleet_id, edge_id in changed):
                subscription.changed.set()


# A view's fragments, rendered for a user from the page's query arguments: fragment
# name (its element's `sse-swap`) -> HTML. Raises WebRefusal (404) when the user may not
# see what was asked for.
Renderer = Callable[[User, dict[str, str]], Awaitable[dict[str, str]]]


@dataclass(frozen=True)
class LiveView:
    render: Renderer
    # The edge the page is about, from its arguments; None: the whole fleet.
    edge_of: Callable[[dict[str, str]], str | None]


def add_routes(router: APIRouter, context: WebContext) -> None:
    @router.get("/web/live")
    async def live(request: Request, user: Viewer) -> Any:
        """The page's fragments, now and whenever they change, as server-sent events."""
        arguments = {key: value[:200] for key, value in request.query_params.items()}
        view = context.live_views.get(arguments.get("view", ""))
        if view is None:
            raise WebRefusal(404, "No such live view.")
        first = await view.render(user, arguments)  # 404 before the stream starts
        refusal = context.feed.refusal(user)
        if refusal is not None:
            raise refusal
        session = session_of(request)
        assert session is not None

        async def events() -> AsyncIterator[dict[str, str]]:
            # Checked again: another page of the user's may have opened meanwhile. The
            # browser tries again later.
            if context.feed.refusal(user) is not None:
                return
            async with context.feed.subscribe(user, view.edge_of(arguments)) as subscription:
                fragments = first
                renewed = time.monotonic()
                while True:
                    for name, html in fragments.items():
                        yield {"event": name, "data": html}
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(subscription.changed.wait(), REFRESH_S)
                    subscription.changed.clear()
                    # The session may have ended (signed out, ended, disabled) while open.
                    current = await session_user(context, session)
                    if current is None:
                        return
                    if time.monotonic() - renewed > REISSUE_AFTER_S:
                        # An open page is in use: its session does not idle out under it.
                        await renew_session(context, session)
                        renewed = time.monotonic()
                    try:
                        fragments = await view.render(current, arguments)
                    except WebRefusal:
                        return  # what it showed left the user's fleet: nothing more to show
                    except SQLAlchemyError as error:
                        # The store away for a moment: the page keeps what it shows.
                        log.warning("live view: cannot render %s: %s", arguments, error)
                        fragments = {}

        response = EventSourceResponse(events(), ping=PING_S)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-store"
        return response
