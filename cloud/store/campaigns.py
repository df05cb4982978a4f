"""Firmware campaigns in the store: made (the image offered to every target edge in the
same transaction), paused, resumed and cancelled; followed from the events edges sync
(`follow_batch`, called by ingest inside the batch's transaction). The rules are
cloud/campaigns.py; what pages and the API read, cloud/store/campaign_views.py.

A campaign drives itself with the desired state the cloud already has: its offers are
`firmware_status` rows and its installs `firmware_rollout` commands in `commands`, each
written by the same writer as an operator's (`desired.write_offer`, as `offer_to` uses
it; `desired.write_command`, as `create_command` does), sent by the aggregator until the
edge answers. Once an edge reports the image verified, a running campaign asks for an
install on each of the edge's chargers that matches; a paused one asks for none, and
holds back those not yet sent; a cancelled one withdraws what the edge has not taken yet
(an offer still `offered`, a command still `pending`) and marks the rest cancelled.

Locks, so that no two writers wait on each other in a circle (PostgreSQL): the edges'
rows first (sorted; ingest holds its edge's), then the campaign's row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from cloud.campaigns import (
    ACTION_STATES,
    ACTIVE_STATES,
    DOWNLOADING_STAGES,
    INSTALLING_STAGES,
    CampaignAction,
    Stage,
    Step,
    command_step,
    download_step,
    install_step,
    is_campaign_charger,
    stage_time_column,
)
from cloud.store.desired import (
    MAX_ACTOR_CHARS,
    DesiredStateError,
    operator_command,
    write_command,
    write_offer,
)
from cloud.store.schema import (
    campaign_targets,
    chargers,
    commands,
    edges,
    firmware_campaigns,
    firmware_image_fleets,
    firmware_images,
    firmware_status,
)
from cloud.store.statements import lock_edge, upsert
from cloud.store.times import utc_now
from contract.protocol import (
    ChargerBoot,
    CommandResult,
    EdgeHealth,
    EventData,
    FirmwareInstall,
    FirmwareManifest,
    FirmwareProgress,
    FirmwareTarget,
)

# The charger id of an edge's own row: its download.
EDGE_ROW = ""
# How long an install command waits for its edge (the edge was online a moment ago: it
# has just verified the image).
INSTALL_COMMAND_WAIT = timedelta(days=7)
MAX_CAMPAIGN_EDGES = 2000
MAX_PATTERNS = 64
# Events that move a campaign: progress and installs, results of its commands; a
# charger's boot (a new charger to install on) and the edge's hourly health (commands
# that expired meanwhile).
_FOLLOWED = (FirmwareProgress, FirmwareInstall, CommandResult, ChargerBoot, EdgeHealth)
CAMPAIGN_KINDS = frozenset(
    {"firmware.progress", "firmware.install", "command.result", "charger.boot", "edge.health"}
)


class CampaignError(DesiredStateError):
    """A campaign that cannot be made or changed as asked; the message says why."""


class UnknownCampaign(CampaignError):
    def __init__(self, campaign_id: int) -> None:
        super().__init__(f"there is no campaign {campaign_id} in this fleet")


# -- making and changing ---------------------------------------------------------------


def create_campaign(
    engine: Engine,
    fleet_id: int,
    image: str,
    edge_ids: Sequence[str],
    patterns: Sequence[FirmwareTarget],
    actor: str,
    *,
    any_image: bool = False,
    now: datetime | None = None,
) -> int:
    """A running campaign of `image` for the fleet's `edge_ids` and the chargers among
    `patterns` (none: the image's own targets), offered at once to every edge; its id.
    `any_image`: the caller may roll out every image (the API's token), not only the
    fleet's and the shared ones."""
    now = now or utc_now()
    wanted = sorted(set(edge_ids))
    if not wanted:
        raise CampaignError("choose at least one site")
    if len(wanted) > MAX_CAMPAIGN_EDGES:
        raise CampaignError(f"a campaign has at most {MAX_CAMPAIGN_EDGES} sites")
    if len(patterns) > MAX_PATTERNS:
        raise CampaignError(f"a campaign has at most {MAX_PATTERNS} vendor/model patterns")
    if not 1 <= len(actor) <= MAX_ACTOR_CHARS:
        raise CampaignError(f"who makes a campaign is 1 to {MAX_ACTOR_CHARS} characters")
    with engine.begin() as connection:
        manifest = _rollable_manifest(connection, image, None if any_image else fleet_id)
        known = set(
            connection.execute(
                select(edges.c.id).where(edges.c.id.in_(wanted), edges.c.fleet_id == fleet_id)
            ).scalars()
        )
        missing = [edge_id for edge_id in wanted if edge_id not in known]
        if missing:
            shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
            raise CampaignError(f"no site {shown} in this fleet")
        chosen = _unique(patterns) or list(manifest.targets)
        for edge_id in wanted:
            lock_edge(connection, edge_id, now)
        campaign_id = int(
            connection.execute(
                insert(firmware_campaigns)
                .values(
                    fleet_id=fleet_id,
                    image=image,
                    targets=[target.model_dump() for target in chosen],
                    state="running",
                    created_by=actor,
                    created_at=now,
                    state_at=now,
                    state_by=None,
                )
                .returning(firmware_campaigns.c.id)
            ).scalar_one()
        )
        connection.execute(
            insert(campaign_targets),
            [
                {
                    "campaign_id": campaign_id,
                    "edge_id": edge_id,
                    "charger_id": EDGE_ROW,
                    "stage": "offered",
                    "detail": "",
                    "stage_at": now,
                    "offered_at": now,
                }
                for edge_id in wanted
            ],
        )
        for edge_id in wanted:
            # An operator's `force` on an earlier offer of the image stays.
            write_offer(connection, edge_id, image, now, force=None)
    return campaign_id


def change_state(
    engine: Engine,
    campaign_id: int,
    action: CampaignAction,
    actor: str,
    fleet_id: int | None,
    now: datetime | None = None,
) -> list[str]:
    """Pause, resume or cancel the campaign (of `fleet_id`; None: of any fleet); the
    edges that now have install commands to be sent."""
    now = now or utc_now()
    new_state, allowed = ACTION_STATES[action]
    with engine.begin() as connection:
        found = connection.execute(
            select(firmware_campaigns.c.fleet_id).where(firmware_campaigns.c.id == campaign_id)
        ).one_or_none()
        if found is None or (fleet_id is not None and found.fleet_id != fleet_id):
            raise UnknownCampaign(campaign_id)
        edge_ids = _campaign_edges(connection, campaign_id)
        for edge_id in edge_ids:
            lock_edge(connection, edge_id, now)  # the live pages of the fleet wake too
        campaign = _campaign_row(connection, campaign_id, lock=True)
        if campaign.state not in allowed:
            raise CampaignError(
                f"campaign {campaign_id} is {campaign.state}: it cannot be {_done(action)}"
            )
        connection.execute(
            update(firmware_campaigns)
            .where(firmware_campaigns.c.id == campaign_id)
            .values(state=new_state, state_at=now, state_by=actor[:MAX_ACTOR_CHARS])
        )
        told: list[str] = []
        if action == "pause":
            _hold_back(connection, campaign_id, f"campaign {campaign_id} paused by {actor}", now)
        elif action == "cancel":
            _cancel(connection, campaign_id, campaign.image, actor, now)
        else:
            told = sorted(_drive(connection, campaign_id, edge_ids, now))
            _complete_if_done(connection, campaign_id, now)
    return told


def _done(action: CampaignAction) -> str:
    return {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[action]


def _unique(patterns: Iterable[FirmwareTarget]) -> list[FirmwareTarget]:
    seen: list[FirmwareTarget] = []
    for pattern in patterns:
        if pattern not in seen:
            seen.append(pattern)
    return seen


def _rollable_manifest(
    connection: Connection, image: str, fleet_id: int | None
) -> FirmwareManifest:
    """The manifest of an image the fleet may roll out (every image, for no fleet)."""
    row = connection.execute(
        select(firmware_images.c.manifest).where(
            firmware_images.c.name == image, image_visible(fleet_id)
        )
    ).one_or_none()
    if row is None:
        raise CampaignError(f"no firmware image {image!r} for this fleet: upload it first")
    if row.manifest is None:
        raise CampaignError(
            f"{image!r} was added before images had signed manifests, and edges refuse it: "
            "add the same file again with its targets"
        )
    return FirmwareManifest.model_validate_json(row.manifest)


def image_visible(fleet_id: int | None) -> Any:
    """Images a fleet may roll out: those it uploaded, and those no fleet did (added
    through the API or the command line)."""
    if fleet_id is None:
        return firmware_images.c.name.is_not(None)
    owners = select(firmware_image_fleets.c.fleet_id).where(
        firmware_image_fleets.c.image == firmware_images.c.name
    )
    return or_(
        ~exists(owners),
        exists(owners.where(firmware_image_fleets.c.fleet_id == fleet_id)),
    )


def _campaign_edges(connection: Connection, campaign_id: int) -> list[str]:
    return list(
        connection.execute(
            select(campaign_targets.c.edge_id)
            .where(
                campaign_targets.c.campaign_id == campaign_id,
                campaign_targets.c.charger_id == EDGE_ROW,
            )
            .order_by(campaign_targets.c.edge_id)
        ).scalars()
    )


def _campaign_row(connection: Connection, campaign_id: int, *, lock: bool = False) -> Any:
    query = (
        select(firmware_campaigns, firmware_images.c.manifest)
        .join(firmware_images, firmware_images.c.name == firmware_campaigns.c.image)
        .where(firmware_campaigns.c.id == campaign_id)
    )
    if lock:
        query = query.with_for_update(of=firmware_campaigns)
    return connection.execute(query).one()


def _hold_back(connection: Connection, campaign_id: int, why: str, now: datetime) -> None:
    """Withdraw the campaign's install commands not sent yet; their chargers wait."""
    rows = connection.execute(
        select(campaign_targets.c.edge_id, campaign_targets.c.charger_id, commands.c.id)
        .join(commands, commands.c.id == campaign_targets.c.command_id)
        .where(
            campaign_targets.c.campaign_id == campaign_id,
            campaign_targets.c.stage == "verified",
            commands.c.status == "pending",
        )
    ).all()
    for row in rows:
        _withdraw_command(connection, row.id, why, now)
        connection.execute(
            update(campaign_targets)
            .where(*_target_key(campaign_id, row.edge_id, row.charger_id))
            .values(command_id=None, detail="waiting: the campaign is paused")
        )


def _withdraw_command(connection: Connection, command_id: str, why: str, now: datetime) -> bool:
    """End a command the aggregator has not sent yet; whether it was still unsent."""
    result = connection.execute(
        update(commands)
        .where(commands.c.id == command_id, commands.c.status == "pending")
        .values(status="expired", finished_at=now, detail=f"withdrawn: {why}"[:500])
    )
    return result.rowcount > 0


def _cancel(
    connection: Connection, campaign_id: int, image: str, actor: str, now: datetime
) -> None:
    why = f"campaign {campaign_id} cancelled by {actor}"
    rows = connection.execute(
        select(campaign_targets, commands.c.status.label("command_status"))
        .outerjoin(commands, commands.c.id == campaign_targets.c.command_id)
        .where(
            campaign_targets.c.campaign_id == campaign_id,
            campaign_targets.c.stage.not_in(("installed", "failed", "cancelled")),
        )
    ).all()
    for row in rows:
        detail: str | None = None
        if row.charger_id == EDGE_ROW:
            if row.stage in DOWNLOADING_STAGES:
                detail = _withdraw_offer(connection, campaign_id, row.edge_id, image)
        elif row.stage == "verified":
            if row.command_id is None:
                detail = "cancelled before an install was asked"
            elif _withdraw_command(connection, row.command_id, why, now):
                detail = "cancelled: the install command was withdrawn before it was sent"
            else:
                detail = (
                    f"cancelled: the install command was already {row.command_status}; "
                    "the edge may still run it"
                )
        elif row.stage == "installing":
            detail = "cancelled while installing: the charger goes on, its outcome shows here"
        if detail is not None:
            _apply(
                connection,
                campaign_id,
                row.edge_id,
                row.charger_id,
                row.stage,
                Step("cancelled", detail),
                now,
            )


def _withdraw_offer(connection: Connection, campaign_id: int, edge_id: str, image: str) -> str:
    """Stop offering the image to the edge if it has not taken the offer yet and no other
    campaign still wants it there; what became of the offer, for the target's detail."""
    status = connection.execute(
        select(firmware_status.c.status).where(
            firmware_status.c.edge_id == edge_id, firmware_status.c.image == image
        )
    ).scalar_one_or_none()
    if status != "offered":
        return (
            f"cancelled while the edge was fetching the image ({status}): it may finish, "
            "nothing is installed"
        )
    others = connection.execute(
        select(func.count())
        .select_from(
            campaign_targets.join(
                firmware_campaigns, firmware_campaigns.c.id == campaign_targets.c.campaign_id
            )
        )
        .where(
            campaign_targets.c.edge_id == edge_id,
            campaign_targets.c.charger_id == EDGE_ROW,
            campaign_targets.c.stage.in_(DOWNLOADING_STAGES),
            campaign_targets.c.campaign_id != campaign_id,
            firmware_campaigns.c.image == image,
            firmware_campaigns.c.state.in_(ACTIVE_STATES),
        )
    ).scalar_one()
    if others:
        return "cancelled; the offer stays: another campaign rolls the same image out here"
    connection.execute(
        delete(firmware_status).where(
            firmware_status.c.edge_id == edge_id,
            firmware_status.c.image == image,
            firmware_status.c.status == "offered",
        )
    )
    return "cancelled: the offer was withdrawn before the edge took it"


def _target_key(campaign_id: int, edge_id: str, charger_id: str) -> list[Any]:
    return [
        campaign_targets.c.campaign_id == campaign_id,
        campaign_targets.c.edge_id == edge_id,
        campaign_targets.c.charger_id == charger_id,
    ]


def _apply(
    connection: Connection,
    campaign_id: int,
    edge_id: str,
    charger_id: str,
    current: Stage,
    step: Step,
    at: datetime,
) -> None:
    """Write a target's step: its detail, and when its stage changes, the stage and the
    time of the change (an install's first `installing` is kept)."""
    values: dict[str, Any] = {"detail": step.detail}
    if step.stage != current:
        values |= {"stage": step.stage, "stage_at": at, stage_time_column(step.stage): at}
    connection.execute(
        update(campaign_targets)
        .where(*_target_key(campaign_id, edge_id, charger_id))
        .values(values)
    )


# -- driving -------------------------------------------------------------------------


def _drive(
    connection: Connection, campaign_id: int, edge_ids: Sequence[str], now: datetime
) -> set[str]:
    """The campaign's next steps at these (locked) edges: each matching charger of an
    edge that verified the image becomes a target; a running campaign asks for an
    install on each that has no command; an install command that expired unanswered
    fails its target. The edges given new commands."""
    campaign = _campaign_row(connection, campaign_id)
    if campaign.state not in ACTIVE_STATES:
        return set()
    patterns = [FirmwareTarget.model_validate(target) for target in campaign.targets]
    image_targets = FirmwareManifest.model_validate_json(campaign.manifest).targets
    verified = connection.execute(
        select(campaign_targets)
        .join(edges, edges.c.id == campaign_targets.c.edge_id)
        .where(
            campaign_targets.c.campaign_id == campaign_id,
            campaign_targets.c.charger_id == EDGE_ROW,
            campaign_targets.c.edge_id.in_(list(edge_ids)),
            campaign_targets.c.stage == "verified",
            # An edge moved to another fleet since is no longer this campaign's to drive.
            edges.c.fleet_id == campaign.fleet_id,
        )
    ).all()
    told: set[str] = set()
    for edge_row in verified:
        edge_id = edge_row.edge_id
        known = connection.execute(
            select(chargers.c.charger_id, chargers.c.vendor, chargers.c.model).where(
                chargers.c.edge_id == edge_id
            )
        ).all()
        targets = {
            row.charger_id
            for row in known
            if is_campaign_charger(patterns, image_targets, row.vendor, row.model)
        }
        existing = {
            row.charger_id: row
            for row in connection.execute(
                select(
                    campaign_targets,
                    commands.c.status.label("command_status"),
                    commands.c.expires_at.label("command_expires_at"),
                )
                .outerjoin(commands, commands.c.id == campaign_targets.c.command_id)
                .where(
                    campaign_targets.c.campaign_id == campaign_id,
                    campaign_targets.c.edge_id == edge_id,
                    campaign_targets.c.charger_id != EDGE_ROW,
                )
            ).all()
        }
        new = sorted(targets - set(existing))
        if new:
            connection.execute(
                insert(campaign_targets),
                [
                    {
                        "campaign_id": campaign_id,
                        "edge_id": edge_id,
                        "charger_id": charger_id,
                        "stage": "verified",
                        "detail": "",
                        "stage_at": now,
                        "offered_at": edge_row.offered_at,
                        "fetched_at": edge_row.fetched_at,
                        "verified_at": edge_row.verified_at,
                    }
                    for charger_id in new
                ],
            )
        nothing = "" if targets or existing else "no charger of this site matches the campaign"
        if edge_row.detail != nothing:
            connection.execute(
                update(campaign_targets)
                .where(*_target_key(campaign_id, edge_id, EDGE_ROW))
                .values(detail=nothing)
            )
        waiting = [charger_id for charger_id in new]
        for charger_id, row in existing.items():
            if row.stage != "verified":
                continue
            if row.command_id is None:
                waiting.append(charger_id)
            elif row.command_status == "expired" or (
                row.command_status == "pending" and row.command_expires_at <= now
            ):
                step = Step("failed", "the install command expired before the edge ran it")
                _apply(connection, campaign_id, edge_id, charger_id, "verified", step, now)
        for charger_id in sorted(waiting):
            if campaign.state != "running":
                _set_detail(
                    connection, campaign_id, edge_id, charger_id, "waiting: the campaign is paused"
                )
                continue
            if _ask_install(connection, campaign, edge_id, charger_id, now):
                told.add(edge_id)
    return told


def _set_detail(
    connection: Connection, campaign_id: int, edge_id: str, charger_id: str, detail: str
) -> None:
    connection.execute(
        update(campaign_targets)
        .where(*_target_key(campaign_id, edge_id, charger_id))
        .values(detail=detail)
    )


def _ask_install(
    connection: Connection, campaign: Any, edge_id: str, charger_id: str, now: datetime
) -> bool:
    """A `firmware_rollout` command for the charger, written as `desired.create_command`
    writes one; False (the target failed) when no command can name the charger."""
    expires_at = now + INSTALL_COMMAND_WAIT
    try:
        command = operator_command(
            "firmware_rollout", charger_id, {"image": campaign.image}, expires_at
        )
    except DesiredStateError:
        step = Step("failed", "no install command can name this charger (its id is too long)")
        _apply(connection, campaign.id, edge_id, charger_id, "verified", step, now)
        return False
    actor = f"campaign {campaign.id} of {campaign.created_by}"[:MAX_ACTOR_CHARS]
    write_command(connection, edge_id, command, expires_at, actor, now)
    connection.execute(
        update(campaign_targets)
        .where(*_target_key(campaign.id, edge_id, charger_id))
        .values(command_id=command.id, detail="install asked")
    )
    return True


def _complete_if_done(connection: Connection, campaign_id: int, now: datetime) -> None:
    """Mark the campaign completed once none of its targets in its fleet is under way:
    no download before verified, no install before installed or failed. Its row is
    locked first, so that of two edges finishing at once the later sees the other."""
    campaign = _campaign_row(connection, campaign_id, lock=True)
    if campaign.state not in ACTIVE_STATES:
        return
    under_way = connection.execute(
        select(func.count())
        .select_from(campaign_targets.join(edges, edges.c.id == campaign_targets.c.edge_id))
        .where(
            campaign_targets.c.campaign_id == campaign_id,
            edges.c.fleet_id == campaign.fleet_id,
            or_(
                and_(
                    campaign_targets.c.charger_id == EDGE_ROW,
                    campaign_targets.c.stage.in_(DOWNLOADING_STAGES),
                ),
                and_(
                    campaign_targets.c.charger_id != EDGE_ROW,
                    campaign_targets.c.stage.in_(INSTALLING_STAGES),
                ),
            ),
        )
    ).scalar_one()
    if under_way == 0:
        connection.execute(
            update(firmware_campaigns)
            .where(firmware_campaigns.c.id == campaign_id)
            .values(state="completed", state_at=now)
        )


# -- following the edges ---------------------------------------------------------------


@dataclass
class _Followed:
    """A target of one of the edge's campaigns, as the batch moves it."""

    campaign_id: int
    image: str
    campaign_state: str
    charger_id: str
    stage: Stage
    command_id: str | None


def follow_batch(
    connection: Connection,
    edge_id: str,
    events: Sequence[tuple[datetime, EventData]],
    now: datetime,
) -> None:
    """Move the edge's campaigns with a batch of its events (in ingest's transaction,
    the edge's row locked): downloads with `firmware.progress`, installs with
    `firmware.install` and the results of their commands; then each campaign's next
    steps at this edge, and whether it is complete. Each stage keeps the event's time."""
    followed = [(at, data) for at, data in events if isinstance(data, _FOLLOWED)]
    if not followed:
        return
    rows = connection.execute(
        select(
            campaign_targets.c.campaign_id,
            campaign_targets.c.charger_id,
            campaign_targets.c.stage,
            campaign_targets.c.command_id,
            firmware_campaigns.c.image,
            firmware_campaigns.c.state,
        )
        .join(firmware_campaigns, firmware_campaigns.c.id == campaign_targets.c.campaign_id)
        .where(
            campaign_targets.c.edge_id == edge_id,
            firmware_campaigns.c.state.in_((*ACTIVE_STATES, "cancelled")),
        )
    ).all()
    if not rows:
        return
    targets = [
        _Followed(row.campaign_id, row.image, row.state, row.charger_id, row.stage, row.command_id)
        for row in rows
    ]
    moved: set[int] = set()
    to_drive: set[int] = set()
    for at, data in followed:
        for target in targets:
            step = _step_for(target, data)
            if step is None:
                continue
            _apply(
                connection, target.campaign_id, edge_id, target.charger_id, target.stage, step, at
            )
            target.stage = step.stage
            moved.add(target.campaign_id)
            if target.charger_id == EDGE_ROW and step.stage == "verified":
                to_drive.add(target.campaign_id)
        if isinstance(data, ChargerBoot | EdgeHealth):
            to_drive |= {
                target.campaign_id
                for target in targets
                if target.charger_id == EDGE_ROW and target.stage == "verified"
            }
    active = {target.campaign_id for target in targets if target.campaign_state in ACTIVE_STATES}
    for campaign_id in sorted((moved | to_drive) & active):
        _drive(connection, campaign_id, [edge_id], now)
        _complete_if_done(connection, campaign_id, now)


def _step_for(target: _Followed, data: EventData) -> Step | None:
    if isinstance(data, FirmwareProgress):
        if target.charger_id != EDGE_ROW or data.image != target.image:
            return None
        return download_step(target.stage, data.status, data.bytes, data.detail)
    if isinstance(data, FirmwareInstall):
        if target.charger_id != data.charger_id or data.image != target.image:
            return None
        return install_step(target.stage, data.status, data.detail)
    if isinstance(data, CommandResult):
        if target.command_id is None or data.command_id != target.command_id:
            return None
        return command_step(target.stage, data.status, data.detail)
    return None


# -- images ----------------------------------------------------------------------------


def record_image_fleet(engine: Engine, image: str, fleet_id: int) -> None:
    """The fleet uploaded `image` (from the web view): it may roll it out."""
    with engine.begin() as connection:
        upsert(
            connection,
            firmware_image_fleets,
            {"image": image, "fleet_id": fleet_id, "added_at": utc_now()},
            key=["image", "fleet_id"],
            update={},
        )
