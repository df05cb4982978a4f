"""The alert settings page: a fleet's admins see and change its alert thresholds (edge
offline, backlog old, connector Faulted, refusals spiking) and its webhook, and send the
webhook a test notice. What a fleet leaves empty is the configuration's (`[alerts]`),
shown beside each field. Stored per fleet (cloud/store/alert_settings.py), read by the
alerts engine at its next look; every change and test is in the audit log.

A fleet's own webhook URL is http:// or https:// with a host (no user or password in
it), and is signed with the fleet's own secret; unless `alerts.fleet_webhooks_private`,
the engine posts only to a host whose addresses are public (cloud/alerts.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from cloud.alerts import NoticeRefused, post_test_notice, rules_for
from cloud.settings import check_webhook_url
from cloud.store import alert_settings as store
from cloud.store.alert_settings import FleetAlertSettings
from cloud.store.users import User
from cloud.web import audit
from cloud.web.auth import Admin, WebRefusal

if TYPE_CHECKING:
    from cloud.web.app import WebContext

MAX_MINUTES = 43_200  # 30 days
MAX_REFUSALS = 1_000_000
MAX_URL = 2000
MAX_SECRET = 200
# Seconds between two test notices of one fleet (from this replica).
TEST_INTERVAL_S = 5.0
# The form's minute fields and the settings they set (seconds).
MINUTE_FIELDS = {
    "offline_minutes": "edge_offline_after",
    "backlog_minutes": "backlog_older_than",
    "faulted_minutes": "faulted_after",
}
WebhookMode = Literal["default", "none", "own"]


@dataclass
class SettingsForm:
    """The form as the admin filled it (text), and what is wrong with it."""

    values: dict[str, str]
    webhook: str
    webhook_url: str
    new_secret: str
    clear_secret: bool
    errors: list[str]

    @classmethod
    def of(cls, form: FormData) -> SettingsForm:
        def text(name: str, limit: int = 50) -> str:
            value = form.get(name)
            if not isinstance(value, str):
                return ""
            if len(value) > limit:
                raise WebRefusal(422, f"The field {name} is longer than {limit}.")
            return value.strip()

        return cls(
            values={name: text(name) for name in [*MINUTE_FIELDS, "refusals_count"]},
            webhook=text("webhook") or "default",
            webhook_url=text("webhook_url", MAX_URL),
            new_secret=text("webhook_secret", MAX_SECRET),
            clear_secret=form.get("clear_secret") == "1",
            errors=[],
        )

    @classmethod
    def of_settings(cls, own: FleetAlertSettings) -> SettingsForm:
        values = {
            name: _minutes_text(getattr(own, setting)) for name, setting in MINUTE_FIELDS.items()
        }
        values["refusals_count"] = "" if own.refusals_count is None else str(own.refusals_count)
        mode = "default" if own.webhook_url is None else ("none" if not own.webhook_url else "own")
        return cls(values, mode, own.webhook_url or "", "", False, [])

    def settings(self, before: FleetAlertSettings) -> FleetAlertSettings | None:
        """The fleet's settings as the form has them; None with `errors` when wrong."""
        errors = self.errors
        seconds: dict[str, float | None] = {}
        for name, setting in MINUTE_FIELDS.items():
            text = self.values[name]
            if not text:
                seconds[setting] = None
            elif text.isdigit() and int(text) <= MAX_MINUTES:
                seconds[setting] = int(text) * 60.0
            else:
                label = setting.replace("_", " ")
                errors.append(f"{label}: whole minutes, 0 (off) to {MAX_MINUTES}, or empty.")
        count_text = self.values["refusals_count"]
        refusals: int | None = None
        if count_text:
            if count_text.isdigit() and int(count_text) <= MAX_REFUSALS:
                refusals = int(count_text)
            else:
                errors.append(f"Refusals: a count, 0 (off) to {MAX_REFUSALS:,}, or empty.")
        url: str | None
        if self.webhook == "default":
            url = None
        elif self.webhook == "none":
            url = ""
        elif self.webhook == "own":
            url = self.webhook_url
            try:
                check_webhook_url(url)
                if not url:
                    raise ValueError("give the URL the alerts are sent to")
                if urlsplit(url).username is not None:
                    raise ValueError("no user or password in the URL (use the secret)")
            except ValueError as error:
                errors.append(f"Webhook URL: {error}.")
        else:
            errors.append("Webhook: the default, none, or a URL of the fleet's own.")
            url = None
        secret = before.webhook_secret
        if self.clear_secret:
            secret = None
        elif self.new_secret:
            if not self.new_secret.isascii() or not self.new_secret.isprintable():
                errors.append("Secret: printable ASCII characters only.")
            secret = self.new_secret
        if errors:
            return None
        return replace(
            before,
            edge_offline_after=seconds["edge_offline_after"],
            backlog_older_than=seconds["backlog_older_than"],
            faulted_after=seconds["faulted_after"],
            refusals_count=refusals,
            webhook_url=url,
            webhook_secret=secret if url else None,
        )


def _minutes_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes = seconds / 60
    return f"{minutes:g}"


def _changes(before: FleetAlertSettings, after: FleetAlertSettings) -> dict[str, Any]:
    """What changed, for the audit log: thresholds as set, the webhook by its scheme and
    host (a URL may carry a token), the secret only as set or cleared."""
    changed: dict[str, Any] = {}
    for name in store.THRESHOLDS:
        if getattr(before, name) != getattr(after, name):
            changed[name] = getattr(after, name)
    if before.webhook_url != after.webhook_url:
        changed["webhook"] = _webhook_label(after.webhook_url)
    if before.webhook_secret != after.webhook_secret:
        changed["webhook_secret"] = "set" if after.webhook_secret else "cleared"
    return changed


def _webhook_label(url: str | None) -> str:
    if url is None:
        return "the default"
    if not url:
        return "none"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"


def page_values(
    context: WebContext,
    user: User,
    own: FleetAlertSettings,
    form: SettingsForm,
    **more: Any,
) -> dict[str, Any]:
    base = context.alerts
    return {
        "form": form,
        "own": own,
        "defaults": {
            "offline_minutes": _minutes_text(base.edge_offline_after),
            "backlog_minutes": _minutes_text(base.backlog_older_than),
            "faulted_minutes": _minutes_text(base.faulted_after),
            "refusals_count": str(base.refusals_count),
        },
        "refusals_window": _minutes_text(base.refusals_window),
        "default_webhook": bool(base.webhook_url),
        "has_secret": bool(own.webhook_secret),
        "saved": False,
        "test_result": None,
        "max_url": MAX_URL,
        "max_secret": MAX_SECRET,
    } | more


def add_routes(router: APIRouter, context: WebContext) -> None:
    engine = context.engine
    last_test: dict[int, float] = {}

    @router.get("/web/alerts/settings")
    async def settings_page(request: Request, user: Admin) -> HTMLResponse:
        own = await asyncio.to_thread(store.fleet_settings, engine, user.fleet_id)
        saved = request.query_params.get("saved") == "1"
        values = page_values(context, user, own, SettingsForm.of_settings(own), saved=saved)
        return context.page(request, "alert_settings.html", values)

    @router.post("/web/alerts/settings")
    async def save_settings(request: Request, user: Admin) -> Response:
        own = await asyncio.to_thread(store.fleet_settings, engine, user.fleet_id)
        form = SettingsForm.of(await request.form())
        changed = form.settings(own)
        if changed is None:
            values = page_values(context, user, own, form)
            return context.page(request, "alert_settings.html", values, status=422)
        await asyncio.to_thread(store.save_fleet_settings, engine, changed, user.email)
        await audit.record(
            engine, user, "alerts.settings", f"fleet {user.fleet_name}", _changes(own, changed)
        )
        response = RedirectResponse("/web/alerts/settings?saved=1", status_code=303)
        context.finish(request, response)
        return response

    @router.post("/web/alerts/settings/test")
    async def send_test(request: Request, user: Admin) -> HTMLResponse:
        own = await asyncio.to_thread(store.fleet_settings, engine, user.fleet_id)
        form = SettingsForm.of_settings(own)
        if not own.webhook_url:
            form.errors.append(
                "Set a webhook URL of the fleet's own first: the default one is the cloud "
                "operator's, and with none nothing is sent."
            )
            values = page_values(context, user, own, form)
            return context.page(request, "alert_settings.html", values, status=422)
        waited = time.monotonic() - last_test.get(user.fleet_id, -TEST_INTERVAL_S)
        if waited < TEST_INTERVAL_S:
            raise WebRefusal(429, f"A test was sent a moment ago: wait {TEST_INTERVAL_S:g} s.")
        last_test[user.fleet_id] = time.monotonic()
        settings = rules_for(context.alerts, own)
        public_only = (
            settings.webhook_url != context.alerts.webhook_url
            and not context.alerts.fleet_webhooks_private
        )
        try:
            async with httpx.AsyncClient(follow_redirects=False) as client:
                status = await post_test_notice(
                    client, settings, user.fleet_name, public_only=public_only
                )
            result = f"Delivered: the webhook answered HTTP {status}."
            delivered = True
        except NoticeRefused as refused:
            result = f"Not delivered: {refused}."
            delivered = False
        await audit.record(
            engine,
            user,
            "alerts.webhook_test",
            f"fleet {user.fleet_name}",
            {"webhook": _webhook_label(own.webhook_url), "result": result},
        )
        values = page_values(
            context, user, own, form, test_result={"text": result, "delivered": delivered}
        )
        return context.page(request, "alert_settings.html", values)
