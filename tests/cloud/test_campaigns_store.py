"""Firmware campaigns in the store, on SQLite and PostgreSQL: offered to every target edge
when made, each edge's download and each matching charger's install following what the
edge syncs, install commands asked for through the command path once an edge verified
the image, pause (nothing new asked, unsent commands held back), resume, cancel
(withdrawn where the edge has not taken it, else marked), an offline edge staying where
it was, completion, and fleets never touching each other's campaigns."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from cloud.campaigns import CAMPAIGN_ACTIONS
from cloud.store import campaign_views as views
from cloud.store import campaigns
from cloud.store.campaigns import CampaignError, UnknownCampaign
from cloud.store.desired import (
    commands_to_send,
    firmware_overview,
    mark_sent,
    offer_to,
    offers_to_send,
)
from cloud.store.times import utc_now
from contract.firmware import parse_target
from tests.cloud.campaign_fleet import CampaignFleet, make_campaign_fleet

IMAGE = "cp-3.1.bin"


@pytest.fixture
def fleet(engine: Engine) -> CampaignFleet:
    return make_campaign_fleet(engine)


def stages(fleet: CampaignFleet, campaign_id: int) -> dict[tuple[str, str], str]:
    view = views.campaign_view(fleet.engine, fleet.acme, campaign_id)
    assert view is not None
    return {(t.edge_id, t.charger_id or ""): t.stage for t in view.targets}


def state(fleet: CampaignFleet, campaign_id: int) -> str:
    found = views.campaign(fleet.engine, fleet.acme, campaign_id)
    assert found is not None
    return found.state


def start(fleet: CampaignFleet, *edge_ids: str, patterns: tuple[str, ...] = ()) -> int:
    return campaigns.create_campaign(
        fleet.engine,
        fleet.acme,
        IMAGE,
        list(edge_ids),
        [parse_target(pattern) for pattern in patterns],
        "ann@acme.test",
    )


def test_a_campaign_offers_the_image_then_installs_on_each_matching_charger(
    fleet: CampaignFleet,
) -> None:
    depot_1, depot_2 = fleet.edges["depot-1"], fleet.edges["depot-2"]
    campaign_id = start(fleet, "depot-1", "depot-2")
    assert stages(fleet, campaign_id) == {("depot-1", ""): "offered", ("depot-2", ""): "offered"}
    # The offer is the edges' desired state, as an operator's offer would be.
    assert [offer.image for offer in offers_to_send(fleet.engine, "depot-1")] == [IMAGE]
    assert depot_2.offer_status(IMAGE) == "offered"

    depot_1.progress(IMAGE, "downloading", at="2026-03-01T10:01:00Z")
    depot_1.progress(IMAGE, "fetched", at="2026-03-01T10:02:00Z")
    assert stages(fleet, campaign_id)[("depot-1", "")] == "fetched"
    assert depot_1.commands() == []  # nothing to install before the edge verified it
    depot_1.progress(IMAGE, "verified", at="2026-03-01T10:03:00Z")

    # Its two ACME AC22 chargers (vendor and model matched without case), not CP-Z.
    assert stages(fleet, campaign_id) == {
        ("depot-1", ""): "verified",
        ("depot-1", "CP-A"): "verified",
        ("depot-1", "CP-B"): "verified",
        ("depot-2", ""): "offered",
    }
    asked = depot_1.commands()
    assert [(c["charger_id"], c["action"], c["arguments"]) for c in asked] == [
        ("CP-A", "firmware_rollout", {"image": IMAGE}),
        ("CP-B", "firmware_rollout", {"image": IMAGE}),
    ]
    assert all(c["actor"] == f"campaign {campaign_id} of ann@acme.test" for c in asked)
    assert {c.charger_id for c in commands_to_send(fleet.engine, "depot-1", utc_now())} == {
        "CP-A",
        "CP-B",
    }
    command_a, command_b = asked[0]["id"], asked[1]["id"]
    depot_1.install("CP-A", IMAGE, "installing", "sent", command_a, at="2026-03-01T10:04:00Z")
    depot_1.install("CP-A", IMAGE, "installing", "Installing", command_a)
    depot_1.install("CP-A", IMAGE, "installed", "Installed", command_a, at="2026-03-01T10:06:00Z")
    depot_1.install("CP-B", IMAGE, "refused", "CP-B runs 4.0, newer", command_b)

    view = views.campaign_view(fleet.engine, fleet.acme, campaign_id)
    assert view is not None
    by_target = {(t.edge_id, t.charger_id): t for t in view.targets}
    installed = by_target[("depot-1", "CP-A")]
    assert installed.stage == "installed"
    assert [(name, at.isoformat()) for name, at in installed.times()][2:] == [
        ("verified", "2026-03-01T10:03:00+00:00"),
        ("installing", "2026-03-01T10:04:00+00:00"),  # the first report of it, kept
        ("installed", "2026-03-01T10:06:00+00:00"),
    ]
    refused = by_target[("depot-1", "CP-B")]
    assert refused.stage == "failed" and "CP-B runs 4.0, newer" in refused.detail
    # The offline edge stays where it was, with its presence.
    offline = by_target[("depot-2", None)]
    assert (offline.stage, offline.state) == ("offered", "offline")
    assert offline.state_at is not None
    assert view.campaign.counts == {
        "offered": 1,
        "fetched": 0,
        "verified": 0,
        "installing": 0,
        "installed": 1,
        "failed": 1,
        "cancelled": 0,
    }
    assert state(fleet, campaign_id) == "running"

    # The offline edge comes back with its backlog: verified, then its charger installs.
    depot_2.progress(IMAGE, "verified")
    (command_c,) = [c["id"] for c in depot_2.commands()]
    depot_2.install("CP-C", IMAGE, "installed", "Installed", command_c)
    assert state(fleet, campaign_id) == "completed"


def test_chargers_are_chosen_by_the_campaigns_patterns_within_the_images_targets(
    fleet: CampaignFleet,
) -> None:
    campaign_id = start(fleet, "depot-1", patterns=("*/ac22", "Other/*"))
    found = views.campaign(fleet.engine, fleet.acme, campaign_id)
    assert found is not None and found.patterns == ["*/ac22", "Other/*"]
    fleet.edges["depot-1"].progress(IMAGE, "verified")
    # CP-Z (Other AC22) matches the campaign but is not among the image's targets.
    assert {c["charger_id"] for c in fleet.edges["depot-1"].commands()} == {"CP-A", "CP-B"}


def test_an_edge_without_a_matching_charger_is_done_once_verified_and_a_refusal_fails(
    fleet: CampaignFleet,
) -> None:
    campaign_id = start(fleet, "depot-1", "depot-2", patterns=("ACME/AC22 Pro",))
    fleet.edges["depot-1"].progress(IMAGE, "verified")
    view = views.campaign_view(fleet.engine, fleet.acme, campaign_id)
    assert view is not None
    (edge_row,) = [t for t in view.targets if t.edge_id == "depot-1"]
    assert edge_row.detail == "no charger of this site matches the campaign"
    fleet.edges["depot-2"].progress(IMAGE, "downloading")
    fleet.edges["depot-2"].progress(IMAGE, "rejected", "only 3 MB free, the image needs 4")
    assert stages(fleet, campaign_id)[("depot-2", "")] == "failed"
    assert state(fleet, campaign_id) == "completed"
    view = views.campaign_view(fleet.engine, fleet.acme, campaign_id, stage="failed")
    assert view is not None
    assert [(t.edge_id, t.detail) for t in view.targets] == [
        ("depot-2", "only 3 MB free, the image needs 4")
    ]


def test_pause_holds_back_unsent_installs_and_asks_none_until_resumed(
    fleet: CampaignFleet,
) -> None:
    depot_1, depot_2 = fleet.edges["depot-1"], fleet.edges["depot-2"]
    campaign_id = start(fleet, "depot-1", "depot-2")
    depot_1.progress(IMAGE, "verified")
    command_a, command_b = [c["id"] for c in depot_1.commands()]
    mark_sent(fleet.engine, [command_a], utc_now())  # CP-A's is on its way; CP-B's is not

    told = campaigns.change_state(fleet.engine, campaign_id, "pause", "ann@acme.test", fleet.acme)
    assert told == [] and state(fleet, campaign_id) == "paused"
    statuses = {c["id"]: (c["status"], c["detail"]) for c in depot_1.commands()}
    assert statuses[command_a] == ("sent", "")
    assert statuses[command_b][0] == "expired" and "withdrawn" in statuses[command_b][1]
    assert {c.id for c in commands_to_send(fleet.engine, "depot-1", utc_now())} == {command_a}

    # While paused, an edge that verifies asks for nothing; its charger waits.
    depot_2.progress(IMAGE, "verified")
    assert depot_2.commands() == []
    view = views.campaign_view(fleet.engine, fleet.acme, campaign_id)
    assert view is not None
    waiting = {(t.edge_id, t.charger_id): t.detail for t in view.targets if t.stage == "verified"}
    assert waiting[("depot-2", "CP-C")] == "waiting: the campaign is paused"
    assert waiting[("depot-1", "CP-B")] == "waiting: the campaign is paused"
    # The edges' reports still move their targets.
    depot_1.install("CP-A", IMAGE, "installed", "Installed", command_a)
    assert stages(fleet, campaign_id)[("depot-1", "CP-A")] == "installed"
    with pytest.raises(CampaignError, match="is paused: it cannot be paused"):
        campaigns.change_state(fleet.engine, campaign_id, "pause", "ann@acme.test", fleet.acme)

    told = campaigns.change_state(fleet.engine, campaign_id, "resume", "ann@acme.test", fleet.acme)
    assert told == ["depot-1", "depot-2"] and state(fleet, campaign_id) == "running"
    assert [c["status"] for c in depot_2.commands()] == ["pending"]
    pending_b = [c for c in depot_1.commands() if c["charger_id"] == "CP-B"][-1]
    assert pending_b["status"] == "pending" and pending_b["id"] != command_b


def test_cancel_withdraws_what_the_edges_have_not_taken_and_marks_the_rest(
    fleet: CampaignFleet,
) -> None:
    depot_1, depot_2 = fleet.edges["depot-1"], fleet.edges["depot-2"]
    campaign_id = start(fleet, "depot-1", "depot-2")
    depot_1.progress(IMAGE, "verified")
    command_a, command_b = [c["id"] for c in depot_1.commands()]
    mark_sent(fleet.engine, [command_a], utc_now())
    depot_1.install("CP-A", IMAGE, "installing", "Installing", command_a)

    campaigns.change_state(fleet.engine, campaign_id, "cancel", "ann@acme.test", fleet.acme)
    assert state(fleet, campaign_id) == "cancelled"
    view = views.campaign_view(fleet.engine, fleet.acme, campaign_id)
    assert view is not None
    by_target = {(t.edge_id, t.charger_id): t for t in view.targets}
    # depot-2 never took the offer: withdrawn (no longer sent), its target cancelled.
    assert by_target[("depot-2", None)].stage == "cancelled"
    assert "withdrawn" in by_target[("depot-2", None)].detail
    assert depot_2.offer_status(IMAGE) is None
    assert offers_to_send(fleet.engine, "depot-2") == []
    # CP-B's command was never sent: withdrawn. CP-A was installing: marked, it goes on.
    assert by_target[("depot-1", "CP-B")].stage == "cancelled"
    assert [c["status"] for c in depot_1.commands() if c["id"] == command_b] == ["expired"]
    assert by_target[("depot-1", "CP-A")].stage == "cancelled"
    assert "goes on" in by_target[("depot-1", "CP-A")].detail
    assert by_target[("depot-1", None)].stage == "verified"  # its download was done

    # What the edge reports afterwards is told, the stage stays where the campaign stopped.
    depot_1.install("CP-A", IMAGE, "installed", "Installed", command_a)
    after = views.campaign_view(fleet.engine, fleet.acme, campaign_id)
    assert after is not None
    (cp_a,) = [t for t in after.targets if t.charger_id == "CP-A"]
    assert cp_a.stage == "cancelled" and "afterwards" in cp_a.detail and "installed" in cp_a.detail
    for action in CAMPAIGN_ACTIONS:
        with pytest.raises(CampaignError, match="is cancelled"):
            campaigns.change_state(fleet.engine, campaign_id, action, "ann", fleet.acme)


def test_cancel_leaves_an_offer_the_edge_is_fetching_and_one_another_campaign_wants(
    fleet: CampaignFleet,
) -> None:
    first = start(fleet, "depot-1", "depot-2")
    second = start(fleet, "depot-2")
    fleet.edges["depot-1"].progress(IMAGE, "downloading")
    campaigns.change_state(fleet.engine, first, "cancel", "ann@acme.test", fleet.acme)
    view = views.campaign_view(fleet.engine, fleet.acme, first)
    assert view is not None
    details = {t.edge_id: t.detail for t in view.targets}
    assert "fetching" in details["depot-1"] and "another campaign" in details["depot-2"]
    assert fleet.edges["depot-1"].offer_status(IMAGE) == "downloading"
    assert fleet.edges["depot-2"].offer_status(IMAGE) == "offered"
    assert state(fleet, second) == "running"


def test_a_campaign_offers_an_image_again_from_its_first_byte_keeping_an_operators_force(
    fleet: CampaignFleet,
) -> None:
    offer_to(fleet.engine, "depot-1", IMAGE, force=True)
    fleet.edges["depot-1"].progress(IMAGE, "rejected", "no space left")
    assert offers_to_send(fleet.engine, "depot-1") == []
    start(fleet, "depot-1", "depot-2")
    (again,) = offers_to_send(fleet.engine, "depot-1")
    assert (again.image, again.force) == (IMAGE, True)
    (offer,) = firmware_overview(fleet.engine, "depot-1")["images"]
    assert (offer["status"], offer["bytes"], offer["detail"]) == ("offered", 0, "")
    (fresh,) = offers_to_send(fleet.engine, "depot-2")
    assert fresh.force is False


def test_an_install_command_that_expired_unanswered_fails_its_charger(
    fleet: CampaignFleet,
) -> None:
    campaign_id = start(fleet, "depot-2")
    fleet.edges["depot-2"].progress(IMAGE, "verified")
    assert stages(fleet, campaign_id)[("depot-2", "CP-C")] == "verified"
    # The edge went away before taking the command; it reports its health days later.
    fleet.edges["depot-2"].health(now=utc_now() + campaigns.INSTALL_COMMAND_WAIT + timedelta(1))
    view = views.campaign_view(fleet.engine, fleet.acme, campaign_id)
    assert view is not None
    (charger,) = [t for t in view.targets if t.charger_id == "CP-C"]
    assert charger.stage == "failed" and "expired" in charger.detail
    assert state(fleet, campaign_id) == "completed"


def test_a_command_result_fails_an_install_the_edge_never_started(fleet: CampaignFleet) -> None:
    campaign_id = start(fleet, "depot-2")
    fleet.edges["depot-2"].progress(IMAGE, "verified")
    (command,) = fleet.edges["depot-2"].commands()
    fleet.edges["depot-2"].command_result(command["id"], "expired", "past its expiry")
    assert stages(fleet, campaign_id)[("depot-2", "CP-C")] == "failed"


def test_a_charger_known_later_becomes_a_target(fleet: CampaignFleet) -> None:
    campaign_id = start(fleet, "depot-1", "depot-2")
    fleet.edges["depot-2"].progress(IMAGE, "verified")
    fleet.edges["depot-2"].boot("CP-D", "ACME", "AC22S")
    assert stages(fleet, campaign_id)[("depot-2", "CP-D")] == "verified"
    assert {c["charger_id"] for c in fleet.edges["depot-2"].commands()} == {"CP-C", "CP-D"}


def test_campaigns_stay_within_their_fleet(fleet: CampaignFleet) -> None:
    campaign_id = start(fleet, "depot-1")
    assert views.list_campaigns(fleet.engine, fleet.bolt) == []
    assert views.campaign_view(fleet.engine, fleet.bolt, campaign_id) is None
    with pytest.raises(UnknownCampaign):
        campaigns.change_state(fleet.engine, campaign_id, "pause", "bob@bolt.test", fleet.bolt)
    assert state(fleet, campaign_id) == "running"
    # Another fleet's site is refused as one that does not exist, and so is its image.
    with pytest.raises(CampaignError, match="no site bolt-1 in this fleet"):
        start(fleet, "depot-1", "bolt-1")
    with pytest.raises(CampaignError, match=r"no firmware image 'bolt-only\.bin'"):
        campaigns.create_campaign(
            fleet.engine, fleet.acme, "bolt-only.bin", ["depot-1"], [], "ann@acme.test"
        )
    assert [image.name for image in views.fleet_images(fleet.engine, fleet.acme)] == [IMAGE]
    assert {image.name for image in views.fleet_images(fleet.engine, fleet.bolt)} == {
        IMAGE,
        "bolt-only.bin",
    }
    assert views.fleet_models(fleet.engine, fleet.acme) == [
        ("ACME", "AC22", 1),
        ("acme", "ac22", 1),
        ("ACME", "AC22 Pro", 1),
        ("Other", "AC22", 1),
    ]
    # The same edge reporting the same image moves only campaigns that target it.
    bolt = campaigns.create_campaign(
        fleet.engine, fleet.bolt, IMAGE, ["bolt-1"], [], "bob@bolt.test"
    )
    fleet.edges["depot-1"].progress(IMAGE, "verified")
    theirs = views.campaign_view(fleet.engine, fleet.bolt, bolt)
    assert theirs is not None and [t.stage for t in theirs.targets] == ["offered"]


def test_a_campaign_is_refused_whole_when_a_choice_is_wrong(fleet: CampaignFleet) -> None:
    with pytest.raises(CampaignError, match="at least one site"):
        start(fleet)
    with pytest.raises(CampaignError, match="no site nowhere-9"):
        start(fleet, "depot-1", "nowhere-9")
    with pytest.raises(CampaignError, match=r"no firmware image 'missing\.bin'"):
        campaigns.create_campaign(
            fleet.engine, fleet.acme, "missing.bin", ["depot-1"], [], "ann@acme.test"
        )
    assert views.list_campaigns(fleet.engine, fleet.acme) == []
    assert fleet.edges["depot-1"].offer_status(IMAGE) is None
