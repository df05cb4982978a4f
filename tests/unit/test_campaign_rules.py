"""Firmware campaigns' rules, without a store: which chargers a campaign installs on, and
what each report of an edge makes of a target's stage (only forward; a cancelled target
keeps its stage and tells what came afterwards)."""

from __future__ import annotations

from cloud.campaigns import (
    Step,
    command_step,
    download_step,
    install_step,
    is_campaign_charger,
    matches,
    stage_time_column,
)
from contract.firmware import parse_target

ACME_AC22 = [parse_target("ACME/AC22*")]


def test_chargers_match_shell_patterns_ignoring_case_and_need_a_vendor_and_model() -> None:
    assert matches(ACME_AC22, "acme", "ac22 pro")
    assert not matches(ACME_AC22, "ACME", "AC11")
    assert not matches(ACME_AC22, None, "AC22")
    assert not matches(ACME_AC22, "ACME", "")
    assert matches([parse_target("*/*")], "Anyone", "[odd] model")


def test_a_campaign_charger_is_among_its_patterns_and_the_images_targets() -> None:
    everyone = [parse_target("*/*")]
    assert is_campaign_charger(everyone, ACME_AC22, "ACME", "AC22")
    assert not is_campaign_charger(everyone, ACME_AC22, "Other", "AC22")
    assert not is_campaign_charger([parse_target("ACME/AC22 Pro")], ACME_AC22, "ACME", "AC22")


def test_a_download_moves_forward_with_the_edges_reports() -> None:
    assert download_step("offered", "downloading", 1024, "") == Step(
        "offered", "downloading: 1024 bytes received"
    )
    assert download_step("offered", "fetched", 4096, "") == Step("fetched", "")
    assert download_step("fetched", "verified", 4096, "") == Step("verified", "")
    assert download_step("fetched", "rejected", 0, "no room") == Step("failed", "no room")
    assert download_step("offered", "rejected", 0, "") == Step("failed", "rejected by the edge")
    # Never back: a late `downloading` or `fetched` after verified changes nothing.
    assert download_step("verified", "downloading", 10, "") is None
    assert download_step("verified", "fetched", 4096, "") is None
    assert download_step("verified", "rejected", 0, "older") is None
    # A verified report wins over an earlier refusal: the edge holds the image now.
    assert download_step("failed", "verified", 4096, "") == Step("verified", "")


def test_an_install_follows_the_chargers_reports_and_ends() -> None:
    assert install_step("verified", "installing", "sent") == Step("installing", "sent")
    assert install_step("installing", "installing", "Installing") == Step(
        "installing", "Installing"
    )
    assert install_step("installing", "installed", "Installed") == Step("installed", "Installed")
    assert install_step("verified", "refused", "CP runs 4.0") == Step(
        "failed", "refused by the edge: CP runs 4.0"
    )
    assert install_step("installed", "failed", "late") is None
    assert install_step("failed", "installed", "") is None
    assert install_step("verified", "unheard-of", "") is None


def test_a_command_result_fails_only_an_install_that_never_started() -> None:
    assert command_step("verified", "expired", "past its expiry") == Step(
        "failed", "the install command was expired: past its expiry"
    )
    assert command_step("verified", "done", "") is None
    assert command_step("installing", "interrupted", "") is None


def test_a_cancelled_target_keeps_its_stage_and_tells_what_came_after() -> None:
    after = install_step("cancelled", "installed", "Installed")
    assert after is not None and after.stage == "cancelled"
    assert after.detail == "cancelled; afterwards the charger's install was installed: Installed"
    download = download_step("cancelled", "verified", 4096, "")
    assert download == Step("cancelled", "cancelled; afterwards the edge reported verified")
    long = install_step("verified", "failed", "x" * 2000)
    assert long is not None and len(long.detail) == 500


def test_each_stage_keeps_its_time_in_its_column() -> None:
    assert [
        stage_time_column(stage)
        for stage in ("offered", "fetched", "verified", "installing", "installed", "failed")
    ] == ["offered_at", "fetched_at", "verified_at", "installing_at", "finished_at", "finished_at"]
