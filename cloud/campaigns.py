"""Firmware campaigns, the rules: which chargers a campaign is for, and what each report
of an edge makes of a target's stage. Plain functions on plain data; the store applies
them (cloud/store/campaigns.py).

A campaign rolls one image out to edges of a fleet. Each edge is a target (its download:
offered → fetched → verified, or failed), and so is each of its chargers that matches the
campaign's vendor/model patterns and the image's own targets, once the cloud knows it
(its install: verified → installing → installed, or failed). A target moves only
forward, with what its edge reports; `cancelled` is where the campaign stopped it, kept
even when the edge reports more afterwards (the detail tells what).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from contract.protocol import FirmwareTarget

CampaignState = Literal["running", "paused", "cancelled", "completed"]
Stage = Literal["offered", "fetched", "verified", "installing", "installed", "failed", "cancelled"]
CampaignAction = Literal["pause", "resume", "cancel"]
CAMPAIGN_STATES: tuple[CampaignState, ...] = get_args(CampaignState)
STAGES: tuple[Stage, ...] = get_args(Stage)
CAMPAIGN_ACTIONS: tuple[CampaignAction, ...] = get_args(CampaignAction)
# A campaign in these states still moves: its targets follow their edges' reports.
ACTIVE_STATES: tuple[CampaignState, ...] = ("running", "paused")
FINAL_STAGES: tuple[Stage, ...] = ("installed", "failed", "cancelled")
# An edge's download not yet over, and a charger's install not yet over.
DOWNLOADING_STAGES: tuple[Stage, ...] = ("offered", "fetched")
INSTALLING_STAGES: tuple[Stage, ...] = ("verified", "installing")
# The state each action leaves a campaign in, and the states it may be taken from.
ACTION_STATES: dict[CampaignAction, tuple[CampaignState, tuple[CampaignState, ...]]] = {
    "pause": ("paused", ("running",)),
    "resume": ("running", ("paused",)),
    "cancel": ("cancelled", ("running", "paused")),
}
# The stage a charger's own install report puts it in.
_INSTALL_STAGES: dict[str, Stage] = {
    "installing": "installing",
    "installed": "installed",
    "failed": "failed",
}
# Command results that end an install the edge never started.
_FAILED_RESULTS = ("failed", "expired", "rejected", "interrupted")
# Detail texts are bounded: an edge's reason can be long.
MAX_DETAIL = 500


@dataclass(frozen=True)
class Step:
    """A target's new stage and the reason or progress shown with it."""

    stage: Stage
    detail: str


def matches(targets: Iterable[FirmwareTarget], vendor: str | None, model: str | None) -> bool:
    """Whether a charger of `vendor` and `model` is among `targets`: shell patterns, case
    ignored, as the edge checks an image's manifest (edge/sync/manifest.py)."""
    if not vendor or not model:
        return False
    vendor, model = vendor.casefold(), model.casefold()
    return any(
        fnmatch.fnmatchcase(vendor, target.vendor.casefold())
        and fnmatch.fnmatchcase(model, target.model.casefold())
        for target in targets
    )


def is_campaign_charger(
    patterns: Iterable[FirmwareTarget],
    image_targets: Iterable[FirmwareTarget],
    vendor: str | None,
    model: str | None,
) -> bool:
    """A charger the campaign installs on: among its patterns and the image's targets
    (the edge refuses an install on any other)."""
    return matches(patterns, vendor, model) and matches(image_targets, vendor, model)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def _after_cancel(what: str) -> Step:
    return Step("cancelled", _bounded(f"cancelled; afterwards {what}"))


def download_step(current: Stage, status: str, received: int, detail: str) -> Step | None:
    """An edge's `firmware.progress` for the campaign's image (None: no change)."""
    if current == "cancelled":
        said = f"the edge reported {status}" + (f": {detail}" if detail else "")
        return _after_cancel(said)
    if status == "downloading" and current == "offered":
        return Step("offered", f"downloading: {received} bytes received")
    if status == "fetched" and current == "offered":
        return Step("fetched", "")
    # A verified report wins over an earlier refusal: the edge holds the image now.
    if status == "verified" and current in ("offered", "fetched", "failed"):
        return Step("verified", "")
    if status in ("rejected", "failed") and current in DOWNLOADING_STAGES:
        return Step("failed", _bounded(detail or f"{status} by the edge"))
    return None


def install_step(current: Stage, status: str, detail: str) -> Step | None:
    """An edge's `firmware.install` of the campaign's image on one of its chargers."""
    if current == "cancelled":
        said = f"the charger's install was {status}" + (f": {detail}" if detail else "")
        return _after_cancel(said)
    if current not in INSTALLING_STAGES:
        return None
    if status == "refused":
        return Step("failed", _bounded(f"refused by the edge: {detail}" if detail else "refused"))
    reported = _INSTALL_STAGES.get(status)
    return None if reported is None else Step(reported, _bounded(detail))


def command_step(current: Stage, status: str, detail: str) -> Step | None:
    """The edge's result of the install command, for an install that never started (an
    install the edge started is followed by its own reports)."""
    if current != "verified" or status not in _FAILED_RESULTS:
        return None
    said = f"the install command was {status}" + (f": {detail}" if detail else "")
    return Step("failed", _bounded(said))


def stage_time_column(stage: Stage) -> str:
    """The column that keeps when a target reached `stage`."""
    if stage in FINAL_STAGES:
        return "finished_at"
    return f"{stage}_at"


def counted_stages(counts: dict[str, int]) -> dict[Stage, int]:
    """Counts per stage in pipeline order, every stage present."""
    return {stage: int(counts.get(stage, 0)) for stage in STAGES}
