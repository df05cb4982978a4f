"""Importing cards from a CSV file (cloud/card_csv.py says the format): for the whole
fleet or one site. The upload is checked line by line and planned against the lists as
they are, then shown as a preview: the cards that will be added, changed, blocked or
removed, and every bad line with its number and reason. A file with a bad line cannot be
applied. Applying makes the plan previewed, all of it in one transaction, or nothing:
when the cards it touches changed since the preview (another operator, the API), the
new preview is shown with who changed what.

The previewed file waits in the store (`card_imports`) so that any replica can apply it.
Operators only; the file is bounded by `cards.max_import_bytes` and
`cards.max_import_rows`; the import is recorded in the audit log.
"""

from __future__ import annotations

import asyncio
import functools
import re
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from cloud import card_csv
from cloud.card_csv import CardRow, CsvRefused, LineError
from cloud.store import card_edits, card_imports
from cloud.store.card_edits import CardChange, CardEditRefused, CardPlan, CardsChanged
from cloud.store.card_writes import CardListError, card_key
from cloud.store.users import User
from cloud.web import audit
from cloud.web.auth import Operator, WebRefusal
from cloud.web.cards_pages import card_link, conflict_lines, fleet_sites, site_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from cloud.web.app import WebContext

# Lines shown per outcome and bad lines shown on the preview; the counts are exact.
SHOWN = 1000
MAX_FILENAME = 200


def import_changes(
    rows: list[CardRow], site: str | None
) -> tuple[list[CardChange], list[LineError]]:
    """The changes a file's lines ask for: for one site, each card there; for the fleet,
    each card at the sites its lines name (and no other), or, when none, where it is
    already, every site for a new card."""
    sites_named: dict[str, set[str]] = {}
    for row in rows:
        if row.sites is not None:
            sites_named.setdefault(card_key(row.id_tag), set()).update(row.sites)
    changes: list[CardChange] = []
    errors: list[LineError] = []
    for row in rows:
        if site is not None:
            if row.sites is not None and row.sites != {site}:
                errors.append(
                    LineError(
                        row.line,
                        f"this import is for site {site} only; the line names "
                        f"{'; '.join(sorted(row.sites))}",
                    )
                )
                continue
            changes.append(CardChange(row.id_tag, row.fields, at=frozenset({site}), line=row.line))
        elif row.sites is None:
            changes.append(CardChange(row.id_tag, row.fields, new_everywhere=True, line=row.line))
        else:
            changes.append(
                CardChange(
                    row.id_tag,
                    row.fields,
                    at=row.sites,
                    keep_only=frozenset(sites_named[card_key(row.id_tag)]),
                    line=row.line,
                )
            )
    return changes, errors


def plan_import(
    context: WebContext, user: User, text: str, site: str | None
) -> tuple[CardPlan, list[LineError], list[CardChange]]:
    """The file's plan against the lists as they are, and every bad line, by line."""
    parsed = card_csv.parse_card_csv(text, context.cards.max_import_rows)
    changes, errors = import_changes(parsed.rows, site)
    errors = parsed.errors + errors
    plan = card_edits.preview_changes(context.engine, user.fleet_id, changes)
    errors += [LineError(error.line or 0, error.reason) for error in plan.errors]
    return plan, sorted(errors, key=lambda error: error.line), changes


def preview_values(
    context: WebContext,
    user: User,
    text: str,
    site: str | None,
    filename: str,
) -> dict[str, Any]:
    plan, errors, _ = plan_import(context, user, text, site)
    import_id = None
    if not errors and plan.edges:
        import_id = card_imports.stash_import(
            context.engine,
            fleet_id=user.fleet_id,
            user_id=user.user_id,
            site=site,
            filename=filename,
            content=text,
            mark=plan.mark,
            digest=plan.digest,
            lifetime_s=context.cards.import_preview_lifetime,
        )
    outcomes: dict[str, list[card_edits.CardOutcome]] = {}
    for outcome in sorted(plan.cards.values(), key=lambda card: card.line or 0):
        outcomes.setdefault(outcome.outcome, []).append(outcome)
    return {
        "plan": plan,
        "errors": errors[:SHOWN],
        "error_count": len(errors),
        "outcomes": outcomes,
        "shown": SHOWN,
        "import_id": import_id,
        "site": site,
        "filename": filename,
        "card_link": card_link,
        "changed": None,
        "refused": None,
    }


def add_routes(
    router: APIRouter, context: WebContext, tell: Callable[[str], None] | None = None
) -> None:
    def form_values(user: User, site: str) -> dict[str, Any]:
        sites = fleet_sites(context, user)
        chosen = site_of(sites, site) if site else None
        return {
            "sites": sites,
            "site": chosen,
            "max_bytes": context.cards.max_import_bytes,
            "max_rows": context.cards.max_import_rows,
            "error": None,
        }

    @router.get("/web/card-import")
    async def import_form(request: Request, user: Operator) -> HTMLResponse:
        site = request.query_params.get("site", "")
        values = await asyncio.to_thread(form_values, user, site)
        return context.page(request, "card_import.html", values)

    @router.post("/web/card-import")
    async def preview(request: Request, user: Operator) -> HTMLResponse:
        form = await request.form()
        site = form.get("site")
        site = site.strip() if isinstance(site, str) else ""
        values = await asyncio.to_thread(form_values, user, site)  # 404 for another's site
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            error = "Choose a CSV file to import."
            return context.page(request, "card_import.html", values | {"error": error}, 422)
        data = await upload.read(context.cards.max_import_bytes + 1)
        filename = _filename(upload.filename)
        try:
            text = card_csv.decode_upload(data, context.cards.max_import_bytes)
            preview = await asyncio.to_thread(
                preview_values, context, user, text, site or None, filename
            )
        except CsvRefused as refused:
            error = f"{filename}: {refused}"
            return context.page(request, "card_import.html", values | {"error": error}, 422)
        status = 422 if preview["error_count"] else 200
        return context.page(request, "card_import_preview.html", preview, status)

    @router.post("/web/card-import/apply")
    async def apply(
        request: Request, user: Operator, import_id: str = Form("", max_length=64)
    ) -> Response:
        if re.fullmatch(r"[0-9a-f]{32}", import_id) is None:
            raise WebRefusal(422, "This form is not one this view made.")
        stashed = await asyncio.to_thread(
            card_imports.stashed_import,
            context.engine,
            import_id,
            user.fleet_id,
            user.user_id,
            context.cards.import_preview_lifetime,
        )
        if stashed is None:
            raise WebRefusal(
                410, "This preview is no longer kept (applied, or too old): upload the file again."
            )
        site = stashed.site
        parsed = card_csv.parse_card_csv(stashed.content, context.cards.max_import_rows)
        changes, _ = import_changes(parsed.rows, site)
        try:
            result = await asyncio.to_thread(
                functools.partial(
                    card_edits.change_cards,
                    context.engine,
                    user.fleet_id,
                    changes,
                    user.email,
                    previewed=(stashed.mark, stashed.digest),
                )
            )
        except (CardsChanged, CardEditRefused, CardListError) as refused:
            await asyncio.to_thread(card_imports.drop_import, context.engine, import_id)
            preview = await asyncio.to_thread(
                preview_values, context, user, stashed.content, site, stashed.filename
            )
            if isinstance(refused, CardsChanged):
                preview["changed"] = conflict_lines(refused.stale)
                status = 409
            else:
                preview["refused"] = str(refused)
                status = 422
            return context.page(request, "card_import_preview.html", preview, status)
        await asyncio.to_thread(card_imports.drop_import, context.engine, import_id)
        plan = result.plan
        counts = {
            outcome: plan.count(outcome)
            for outcome in ("added", "changed", "blocked", "removed", "unchanged")
        }
        await audit.record(
            context.engine,
            user,
            "card.import",
            f"{site}/{stashed.filename}" if site else stashed.filename,
            {"revision": result.revision, "versions": result.versions, "cards": counts},
        )
        for edge_id in result.versions:
            if tell is not None:
                tell(edge_id)
        return context.page(
            request,
            "card_import_done.html",
            {"counts": counts, "versions": result.versions, "site": site, "result": result},
        )


def _filename(name: str | None) -> str:
    """The upload's name as shown and audited: printable, bounded."""
    cleaned = "".join(character for character in (name or "") if character.isprintable())
    return cleaned[-MAX_FILENAME:] or "cards.csv"
