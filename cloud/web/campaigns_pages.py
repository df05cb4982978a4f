"""The firmware campaigns pages: the fleet's campaigns, a new campaign (an image uploaded
and signed by the fleet's key as `PUT /api/firmware/{name}` does, or one the fleet holds;
sites; charger models or patterns), and one campaign with every target's stage, reason and
times, counted per stage, with pause, resume and cancel for operators.

Every page and its live parts are held to the user's fleet (another fleet's campaign is
404); viewers read, operators and admins act; every change is in the audit log. The new
campaign form is a plain multipart form: it works without JavaScript, and is read only
once its user is known to be an operator (an anonymous upload is refused unread).
"""

from __future__ import annotations

import asyncio
import functools
import glob
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from starlette.datastructures import FormData, UploadFile

from cloud.campaigns import CAMPAIGN_ACTIONS, STAGES, CampaignAction, Stage
from cloud.firmware import (
    FirmwareError,
    ImageUpload,
    StoredImage,
    make_manifest,
    sign_manifest,
)
from cloud.store import campaign_views as views
from cloud.store import campaigns as store
from cloud.store import desired
from cloud.store.database import StoreError
from cloud.store.desired import FirmwareImage
from cloud.store.users import User
from cloud.web import audit
from cloud.web.auth import CSRF_FIELD, ROLE_RANK, Operator, Viewer, WebRefusal, session_of
from cloud.web.live import LiveView
from contract.firmware import parse_target, target_text
from contract.protocol import IMAGE_NAME_PATTERN, FirmwareTarget, is_edge_id

if TYPE_CHECKING:
    from cloud.web.app import WebContext

# A text field of the form: a list of patterns is a few lines.
MAX_TEXT_FIELD = 20_000
MAX_LINES = 64
LIST_FRAGMENTS = {"campaigns": "_campaigns_list.html"}
CAMPAIGN_FRAGMENTS = {"summary": "_campaign_summary.html", "targets": "_campaign_targets.html"}


class FormProblem(ValueError):
    """A field of the new campaign form that cannot be used; the message names it."""


def campaign_path(campaign_id: int) -> str:
    return f"/web/campaigns/{campaign_id}"


def _campaign_id(text: str) -> int:
    """A campaign id from a URL; 404 for anything that cannot be one."""
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) < 1:
        raise WebRefusal(404, "There is no such campaign in your fleet.")
    return int(text)


def _stage(text: str | None) -> Stage | None:
    return next((stage for stage in STAGES if stage == text), None)


def list_values(context: WebContext, user: User) -> dict[str, Any]:
    return {
        "campaigns": views.list_campaigns(context.engine, user.fleet_id),
        "shown": views.CAMPAIGNS_SHOWN,
        "stages": STAGES,
        "now": datetime.now(UTC),
    }


def campaign_values(
    context: WebContext, user: User, campaign_id: int, stage: Stage | None
) -> dict[str, Any]:
    found = views.campaign_view(context.engine, user.fleet_id, campaign_id, stage)
    if found is None:
        # Another fleet's campaign is answered as one that does not exist.
        raise WebRefusal(404, "There is no such campaign in your fleet.")
    return {
        "campaign": found.campaign,
        "targets": found.targets,
        "more": found.more,
        "stage": stage,
        "stages": STAGES,
        "path": campaign_path(campaign_id),
        "actions": CAMPAIGN_ACTIONS,
        "can_act": ROLE_RANK[user.role] >= ROLE_RANK["operator"],
        "now": datetime.now(UTC),
    }


def _render(
    context: WebContext, values: dict[str, Any], templates: dict[str, str]
) -> dict[str, str]:
    return {name: context.render_text(template, values) for name, template in templates.items()}


def _with_fragments(
    context: WebContext, values: dict[str, Any], templates: dict[str, str]
) -> dict[str, Any]:
    rendered = _render(context, values, templates)
    return values | {"fragments": {name: Markup(html) for name, html in rendered.items()}}


def new_form_values(context: WebContext, user: User) -> dict[str, Any]:
    models = [
        (glob.escape(vendor) + "/" + glob.escape(model), vendor, model, count)
        for vendor, model, count in views.fleet_models(context.engine, user.fleet_id)
    ]
    return {
        "images": views.fleet_images(context.engine, user.fleet_id),
        "sites": views.fleet_sites(context.engine, user.fleet_id),
        "models": models,
        "can_upload": context.signing_key is not None,
        "max_image_bytes": context.firmware.max_image_bytes,
        "now": datetime.now(UTC),
    }


@dataclass(frozen=True)
class CampaignForm:
    """The new campaign form as it came: shown again with the error when refused."""

    source: str  # "existing" or "upload"
    image: str
    name: str
    version: str
    image_targets: str
    edges: list[str]
    all_edges: bool
    models: list[str]
    patterns: str
    upload: UploadFile | None

    @classmethod
    def read(cls, form: FormData) -> CampaignForm:
        def text(name: str) -> str:
            value = form.get(name)
            if not isinstance(value, str):
                return ""
            if len(value) > MAX_TEXT_FIELD:
                raise FormProblem(f"the field {name} is longer than {MAX_TEXT_FIELD} characters")
            return value.strip()

        def texts(name: str) -> list[str]:
            return [value.strip() for value in form.getlist(name) if isinstance(value, str)]

        upload = form.get("file")
        return cls(
            source=text("source") or "existing",
            image=text("image"),
            name=text("name"),
            version=text("version"),
            image_targets=text("image_targets"),
            edges=texts("edges"),
            all_edges=text("all_edges") == "yes",
            models=texts("models"),
            patterns=text("patterns"),
            upload=upload if isinstance(upload, UploadFile) and upload.filename else None,
        )

    def patterns_chosen(self) -> list[FirmwareTarget]:
        """The charger models ticked and the patterns written (none: the image's own)."""
        chosen = [_target(text, "a charger model") for text in self.models if text]
        chosen += _targets(self.patterns, "Chargers")
        if len(chosen) > store.MAX_PATTERNS:
            raise FormProblem(f"choose at most {store.MAX_PATTERNS} charger models and patterns")
        return chosen


def _target(text: str, where: str) -> FirmwareTarget:
    try:
        return parse_target(text)
    except ValueError as error:
        raise FormProblem(f"{where}: {error}") from None


def _targets(text: str, field: str) -> list[FirmwareTarget]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_LINES:
        raise FormProblem(f"{field}: at most {MAX_LINES} lines")
    return [_target(line, f"{field}, line {number}") for number, line in enumerate(lines, 1)]


def _keep_upload(source: BinaryIO, directory: Path, max_bytes: int) -> StoredImage:
    """The uploaded file copied into the images' directory (blocking: run it in a
    thread), as the API keeps an image: hashed as it is written, fsynced, bounded."""
    upload = ImageUpload(directory, max_bytes)
    try:
        source.seek(0)
        for block in iter(lambda: source.read(1 << 20), b""):
            upload.write(block)
        return upload.finish()
    except BaseException:
        upload.discard()
        raise


def _register(
    context: WebContext,
    key: Ed25519PrivateKey,
    stored: StoredImage,
    name: str,
    version: str,
    targets: list[FirmwareTarget],
) -> FirmwareImage:
    """The image's manifest signed by the fleet's key and the image added, as
    `PUT /api/firmware/{name}` does; the file is removed unless it is the one kept."""
    registered = ""
    try:
        manifest = make_manifest(name, version, targets, stored.size, stored.sha256, key)
        text, signature = sign_manifest(key, manifest)
        image = desired.add_firmware_image(
            context.engine, manifest, text, signature, str(stored.path)
        )
        registered = image.path
        return image
    finally:
        stored.keep_if(registered)


def add_routes(router: APIRouter, context: WebContext) -> None:
    async def live_list(user: User, arguments: dict[str, str]) -> dict[str, str]:
        values = await asyncio.to_thread(list_values, context, user)
        return _render(context, values, LIST_FRAGMENTS)

    async def live_campaign(user: User, arguments: dict[str, str]) -> dict[str, str]:
        campaign_id = _campaign_id(arguments.get("campaign", ""))
        stage = _stage(arguments.get("stage"))
        values = await asyncio.to_thread(campaign_values, context, user, campaign_id, stage)
        return _render(context, values, CAMPAIGN_FRAGMENTS)

    # Campaigns span their fleet's sites: any change in the fleet may move them.
    context.live_views["campaigns"] = LiveView(live_list, lambda arguments: None)
    context.live_views["campaign"] = LiveView(live_campaign, lambda arguments: None)

    @router.get("/web/campaigns")
    async def campaigns_page(request: Request, user: Viewer) -> HTMLResponse:
        values = await asyncio.to_thread(list_values, context, user)
        return context.page(
            request, "campaigns.html", _with_fragments(context, values, LIST_FRAGMENTS)
        )

    @router.get("/web/campaigns/new")
    async def new_campaign_form(request: Request, user: Operator, image: str = "") -> HTMLResponse:
        values = await asyncio.to_thread(new_form_values, context, user)
        return context.page(
            request, "campaign_new.html", values | {"error": None, "form": None, "chosen": image}
        )

    @router.post("/web/campaigns")
    async def create_campaign(request: Request, user: Operator) -> Response:
        # Read only now: the role and the CSRF token were checked first.
        form: CampaignForm | None = None
        try:
            form = CampaignForm.read(await request.form())
            campaign_id, edge_ids = await _create(request, user, form)
        except (FormProblem, FirmwareError, StoreError) as problem:
            values = await asyncio.to_thread(new_form_values, context, user)
            sentence = str(problem)
            values |= {
                "error": sentence[:1].upper() + sentence[1:],
                "form": form,
                "chosen": form.image if form else "",
            }
            return context.page(request, "campaign_new.html", values, status=422)
        for edge_id in edge_ids:
            context.on_desired_state(edge_id)
        redirect = RedirectResponse(campaign_path(campaign_id), status_code=303)
        context.finish(request, redirect)
        return redirect

    async def _create(request: Request, user: User, form: CampaignForm) -> tuple[int, list[str]]:
        sites = await asyncio.to_thread(views.fleet_sites, context.engine, user.fleet_id)
        edge_ids = [site.edge_id for site in sites] if form.all_edges else form.edges
        if not edge_ids:
            raise FormProblem("choose at least one site")
        strange = next((edge_id for edge_id in edge_ids if not is_edge_id(edge_id)), None)
        if strange is not None:
            raise FormProblem(f"no site {strange[:80]!r} in this fleet")
        patterns = form.patterns_chosen()
        image = form.image
        if form.source == "upload":
            image = await _upload(user, form)
        elif not image:
            raise FormProblem("choose an image, or upload one")
        campaign_id = await asyncio.to_thread(
            functools.partial(
                store.create_campaign,
                context.engine,
                user.fleet_id,
                image,
                edge_ids,
                patterns,
                user.email,
            )
        )
        created = await asyncio.to_thread(
            views.campaign, context.engine, user.fleet_id, campaign_id
        )
        await audit.record(
            context.engine,
            user,
            "campaign.create",
            f"campaign {campaign_id}",
            {
                "campaign_id": campaign_id,
                "image": image,
                "edges": sorted(set(edge_ids)),
                "patterns": created.patterns if created else [],
            },
        )
        return campaign_id, sorted(set(edge_ids))

    async def _upload(user: User, form: CampaignForm) -> str:
        """The uploaded image, signed and added; its name."""
        key = context.signing_key
        if key is None:
            raise FormProblem("this server takes no uploads: choose an image it holds")
        if form.upload is None:
            raise FormProblem("choose the image file to upload")
        name = form.name or (form.upload.filename or "")
        if not _is_image_name(name):
            raise FormProblem(
                f"{name[:80]!r} is not an image name: 1 to 128 letters, digits, '.', '_' or "
                "'-', starting with a letter or digit"
            )
        if not form.version:
            raise FormProblem("give the image's version")
        targets = _targets(form.image_targets, "The image is for")
        if not targets:
            raise FormProblem("say which chargers the image is for (VENDOR/MODEL, e.g. ACME/AC22*)")
        settings = context.firmware
        stored = await asyncio.to_thread(
            _keep_upload, form.upload.file, settings.directory, settings.max_image_bytes
        )
        image = await asyncio.to_thread(
            _register, context, key, stored, name, form.version, targets
        )
        await asyncio.to_thread(store.record_image_fleet, context.engine, image.name, user.fleet_id)
        await audit.record(
            context.engine,
            user,
            "firmware.upload",
            image.name,
            {
                "version": image.version,
                "size": image.size,
                "sha256": image.sha256,
                "targets": [target_text(target) for target in targets],
            },
        )
        return image.name

    @router.get("/web/campaigns/{campaign_id}")
    async def campaign_page(
        request: Request, campaign_id: str, user: Viewer, stage: str | None = None
    ) -> HTMLResponse:
        number = _campaign_id(campaign_id)
        values = await asyncio.to_thread(campaign_values, context, user, number, _stage(stage))
        # The page's own fragments carry its CSRF token in their forms (no JavaScript).
        values |= {"csrf_token": _csrf(request), "csrf_field": CSRF_FIELD}
        page = _with_fragments(context, values, CAMPAIGN_FRAGMENTS)
        return context.page(request, "campaign.html", page)

    @router.post("/web/campaigns/{campaign_id}/{action}")
    async def change_campaign(
        request: Request, campaign_id: str, action: str, user: Operator
    ) -> Response:
        number = _campaign_id(campaign_id)
        chosen: CampaignAction | None = next((a for a in CAMPAIGN_ACTIONS if a == action), None)
        if chosen is None:
            raise WebRefusal(404, "A campaign is paused, resumed or cancelled.")
        # From htmx (the page's live part): a sentence in the page; the stream shows the rest.
        htmx = request.headers.get("HX-Request") == "true"
        try:
            told = await asyncio.to_thread(
                store.change_state, context.engine, number, chosen, user.email, user.fleet_id
            )
        except store.UnknownCampaign as error:
            raise WebRefusal(404, "There is no such campaign in your fleet.") from error
        except store.CampaignError as error:
            if htmx:
                return _message(request, f"Nothing changed: {error}.", error=True)
            raise WebRefusal(409, f"Nothing changed: {error}.") from error
        await audit.record(
            context.engine,
            user,
            f"campaign.{chosen}",
            f"campaign {number}",
            {"campaign_id": number},
        )
        for edge_id in told:
            context.on_desired_state(edge_id)
        if htmx:
            return _message(request, f"Campaign {number} {_PAST[chosen]}.", error=False)
        redirect = RedirectResponse(campaign_path(number), status_code=303)
        context.finish(request, redirect)
        return redirect

    def _message(request: Request, text: str, *, error: bool) -> HTMLResponse:
        html = context.render_text("_campaign_message.html", {"text": text, "error": error})
        response = HTMLResponse(html)
        context.finish(request, response)
        return response


_PAST: dict[CampaignAction, str] = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}


def _csrf(request: Request) -> str:
    session = session_of(request)
    return session.csrf if session else ""


def _is_image_name(name: str) -> bool:
    return re.fullmatch(IMAGE_NAME_PATTERN, name) is not None
