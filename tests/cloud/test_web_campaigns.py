"""The firmware campaigns pages and API through the real ASGI app on SQLite and PostgreSQL:
a campaign made with the form (an image the fleet holds, or one uploaded and signed with
the fleet's key), its targets' stages as the edges report them, pause, resume and cancel
by operators with the CSRF token, viewers reading only, every change in the audit log,
fleets never seeing each other's campaigns or images, and the JSON API for the same."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select

from cloud.api import create_cloud_api, protect_cloud_api
from cloud.settings import CloudSettings
from cloud.store import campaign_views as views
from cloud.store import campaigns
from cloud.store.audit import recent
from cloud.store.desired import firmware_image
from cloud.store.schema import firmware_images
from contract.protocol import FirmwareManifest
from tests.cloud.campaign_fleet import CampaignFleet, make_campaign_fleet
from tests.cloud.web import Browser

IMAGE = "cp-3.1.bin"
TOKEN = {"Authorization": "Bearer machine-token"}
KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def fleet(engine: Engine) -> CampaignFleet:
    return make_campaign_fleet(engine)


@pytest.fixture
def settings(tmp_path: Path) -> CloudSettings:
    return CloudSettings(
        api={"token": "machine-token"},
        firmware={"directory": tmp_path / "firmware", "max_image_bytes": 1_000_000},
    )


@pytest.fixture
async def client(engine: Engine, settings: CloudSettings) -> AsyncIterator[httpx.AsyncClient]:
    api = create_cloud_api(settings, engine, KEY)
    app = protect_cloud_api(api, settings.api, settings.firmware.max_image_bytes)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://cloud.test") as http:
        yield http


async def person(client: httpx.AsyncClient, email: str) -> Browser:
    client.cookies.clear()
    browser = Browser(client)
    assert (await browser.sign_in(email)).status_code == 303
    return browser


async def submit(
    browser: Browser,
    fields: list[tuple[str, str]],
    upload: tuple[str, bytes] | None = None,
) -> httpx.Response:
    """The new campaign form as a browser sends it: multipart, with the page's token."""
    await browser.get("/web/campaigns/new")
    data: dict[str, str | list[str]] = {"csrf_token": browser.csrf}
    for name, value in fields:
        present = data.get(name)
        if present is None:
            data[name] = value
        else:
            data[name] = [*([present] if isinstance(present, str) else present), value]
    files = {"file": (upload[0], upload[1], "application/octet-stream")} if upload else None
    # An empty file field, as a browser sends it when none is chosen.
    files = files or {"file": ("", b"", "application/octet-stream")}
    return await browser.client.post("/web/campaigns", data=data, files=files)


def created_id(response: httpx.Response) -> int:
    assert response.status_code == 303, response.text
    found = re.fullmatch(r"/web/campaigns/(\d+)", response.headers["location"])
    assert found is not None
    return int(found.group(1))


def target_rows(page: str) -> list[tuple[str, str, str]]:
    return re.findall(r'data-edge="([^"]+)" data-charger="([^"]*)" data-stage="([a-z]+)"', page)


async def test_an_operator_starts_a_campaign_with_the_form_and_follows_it(
    fleet: CampaignFleet, client: httpx.AsyncClient
) -> None:
    ann = await person(client, "ann@acme.test")
    form = await ann.get("/web/campaigns/new")
    assert form.status_code == 200
    # The fleet's sites, its chargers' models, its images and the shared ones only.
    assert 'value="depot-1"' in form.text and 'value="depot-2"' in form.text
    assert "bolt-1" not in form.text and "bolt-only.bin" not in form.text
    assert 'value="ACME/AC22 Pro"' in form.text
    response = await submit(
        ann,
        [("source", "existing"), ("image", IMAGE), ("edges", "depot-1"), ("edges", "depot-2")],
    )
    campaign_id = created_id(response)
    page = await ann.get(f"/web/campaigns/{campaign_id}")
    assert page.status_code == 200
    assert target_rows(page.text) == [("depot-1", "", "offered"), ("depot-2", "", "offered")]
    assert 'offline</span> <span class="since">since' in page.text  # depot-2's presence
    assert "stays here until the site is back" in page.text
    assert 'data-action="pause"' in page.text and 'data-action="cancel"' in page.text

    fleet.edges["depot-1"].progress(IMAGE, "verified")
    page = await ann.get(f"/web/campaigns/{campaign_id}")
    assert target_rows(page.text) == [
        ("depot-1", "", "verified"),
        ("depot-1", "CP-A", "verified"),
        ("depot-1", "CP-B", "verified"),
        ("depot-2", "", "offered"),
    ]
    assert page.text.count("waiting to be sent") == 2
    failed = await ann.get(f"/web/campaigns/{campaign_id}?stage=verified")
    assert [row[1] for row in target_rows(failed.text)] == ["", "CP-A", "CP-B"]
    listing = await ann.get("/web/campaigns")
    assert f'data-campaign="{campaign_id}" data-state="running"' in listing.text
    assert 'data-stage="verified" data-count="2"' in listing.text
    assert 'href="/web/campaigns/new"' in listing.text
    entry = (await _audit(fleet, "campaign.create"))[0]
    assert entry.actor == "ann@acme.test" and entry.detail is not None
    assert entry.detail["edges"] == ["depot-1", "depot-2"]
    assert entry.detail["patterns"] == ["ACME/AC22*"]  # the image's own targets


async def test_an_image_uploaded_with_the_form_is_signed_and_the_fleets_own(
    fleet: CampaignFleet, client: httpx.AsyncClient, settings: CloudSettings
) -> None:
    ann = await person(client, "ann@acme.test")
    content = b"\x7fFW" + bytes(range(256)) * 300
    response = await submit(
        ann,
        [
            ("source", "upload"),
            ("name", "cp-4.0.bin"),
            ("version", "4.0"),
            ("image_targets", "ACME/AC22*\nACME/AC11"),
            ("edges", "depot-1"),
            ("models", "ACME/AC22"),
        ],
        upload=("cp-4.0.bin", content),
    )
    campaign_id = created_id(response)
    image = firmware_image(fleet.engine, "cp-4.0.bin")
    assert image is not None and image.manifest is not None
    assert Path(image.path).read_bytes() == content  # noqa: ASYNC240 - a small file, once
    assert Path(image.path).parent == settings.firmware.directory
    manifest = FirmwareManifest.model_validate_json(image.manifest)
    assert (manifest.version, [f"{t.vendor}/{t.model}" for t in manifest.targets]) == (
        "4.0",
        ["ACME/AC22*", "ACME/AC11"],
    )
    KEY.public_key().verify(base64.b64decode(image.signature), image.manifest.encode())
    summary = views.campaign(fleet.engine, fleet.acme, campaign_id)
    assert summary is not None and summary.patterns == ["ACME/AC22"]
    assert [entry.action for entry in recent(fleet.engine, fleet.acme, 2)] == [
        "campaign.create",
        "firmware.upload",
    ]
    # Acme's own image: Bolt neither sees it nor rolls it out.
    assert "cp-4.0.bin" not in [i.name for i in views.fleet_images(fleet.engine, fleet.bolt)]
    bob = await person(client, "bob@bolt.test")
    form = await bob.get("/web/campaigns/new")
    assert "cp-4.0.bin" not in form.text
    refused = await submit(bob, [("image", "cp-4.0.bin"), ("edges", "bolt-1")])
    assert refused.status_code == 422 and "No firmware image" in refused.text


async def test_a_wrong_form_is_refused_whole_with_the_reason(
    fleet: CampaignFleet, client: httpx.AsyncClient, settings: CloudSettings
) -> None:
    ann = await person(client, "ann@acme.test")
    cases = [
        ([("image", IMAGE)], "Choose at least one site"),
        ([("image", IMAGE), ("edges", "depot-1"), ("patterns", "ACME/*\nnoslash")], "line 2"),
        ([("image", IMAGE), ("edges", "bolt-1")], "No site bolt-1 in this fleet"),
        ([("image", IMAGE), ("edges", "+/#" * 5000)], "No site &#39;+/#+/#"),
        ([("image", "bolt-only.bin"), ("edges", "depot-1")], "No firmware image"),
        (
            [("source", "upload"), ("name", "new.bin"), ("image_targets", "A/B")],
            "Choose at least one site",
        ),
    ]
    for fields, reason in cases:
        response = await submit(ann, fields)
        assert response.status_code == 422, fields
        assert reason in response.text, (fields, response.text[-2000:])
    # An upload with no version: refused before any byte is kept.
    response = await submit(
        ann,
        [("source", "upload"), ("name", "new.bin"), ("image_targets", "A/B"), ("edges", "depot-1")],
        upload=("new.bin", b"bytes"),
    )
    assert response.status_code == 422 and "version" in response.text
    # Bytes too many for the image limit: refused, nothing kept.
    response = await submit(
        ann,
        [
            ("source", "upload"),
            ("name", "big.bin"),
            ("version", "1"),
            ("image_targets", "A/B"),
            ("edges", "depot-1"),
        ],
        upload=("big.bin", b"\0" * 1_000_001),
    )
    assert response.status_code == 422 and "max_image_bytes" in response.text
    assert views.list_campaigns(fleet.engine, fleet.acme) == []
    with fleet.engine.connect() as connection:
        names = set(connection.execute(select(firmware_images.c.name)).scalars())
    assert names == {IMAGE, "bolt-only.bin"}
    kept = (
        list(settings.firmware.directory.glob("*")) if settings.firmware.directory.exists() else []
    )
    assert kept == []


async def test_pause_resume_and_cancel_need_an_operator_and_the_csrf_token(
    fleet: CampaignFleet, client: httpx.AsyncClient
) -> None:
    campaign_id = campaigns.create_campaign(
        fleet.engine, fleet.acme, IMAGE, ["depot-1"], [], "ann@acme.test"
    )
    path = f"/web/campaigns/{campaign_id}"
    vic = await person(client, "vic@acme.test")
    page = await vic.get(path)
    assert page.status_code == 200 and 'data-action="pause"' not in page.text
    assert 'href="/web/campaigns/new"' not in (await vic.get("/web/campaigns")).text
    assert (await vic.get("/web/campaigns/new")).status_code == 403
    assert (await vic.post(f"{path}/pause", {})).status_code == 403
    assert (await submit(vic, [("image", IMAGE), ("edges", "depot-1")])).status_code == 403

    ann = await person(client, "ann@acme.test")
    await ann.get(path)
    refused = await ann.client.post(f"{path}/pause", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert views.campaign(fleet.engine, fleet.acme, campaign_id).state == "running"  # type: ignore[union-attr]
    assert (await ann.post(f"{path}/pause", {})).status_code == 303
    page = await ann.get(path)
    assert 'data-state="paused"' in page.text and "by ann@acme.test" in page.text
    assert 'data-action="resume"' in page.text and 'data-action="pause"' not in page.text
    again = await ann.post(f"{path}/pause", {})
    assert again.status_code == 409 and "it cannot be paused" in again.text
    # From the live part of the page: htmx sends the token as a header, a sentence comes back.
    htmx = {"HX-Request": "true", "X-CSRF-Token": ann.csrf}
    resumed = await ann.client.post(f"{path}/resume", headers=htmx)
    assert resumed.status_code == 200 and 'data-message="done"' in resumed.text
    refused = await ann.client.post(f"{path}/resume", headers=htmx)
    assert 'data-message="refused"' in refused.text and "it cannot be resumed" in refused.text
    adam = await person(client, "adam@acme.test")
    await adam.get(path)
    assert (await adam.post(f"{path}/cancel", {})).status_code == 303
    assert (await adam.post(f"{path}/restart", {})).status_code == 404
    page = await adam.get(path)
    assert 'data-state="cancelled"' in page.text and 'data-action="' not in page.text
    assert [(e.action, e.actor) for e in await _audit(fleet, "campaign.")] == [
        ("campaign.cancel", "adam@acme.test"),
        ("campaign.resume", "ann@acme.test"),
        ("campaign.pause", "ann@acme.test"),
    ]


async def test_another_fleets_campaign_is_not_there(
    fleet: CampaignFleet, client: httpx.AsyncClient
) -> None:
    campaign_id = campaigns.create_campaign(
        fleet.engine, fleet.acme, IMAGE, ["depot-1"], [], "ann@acme.test"
    )
    bob = await person(client, "bob@bolt.test")
    listing = await bob.get("/web/campaigns")
    assert listing.status_code == 200 and "data-campaign=" not in listing.text
    assert (await bob.get(f"/web/campaigns/{campaign_id}")).status_code == 404
    assert (await bob.get("/web/campaigns/99999999999")).status_code == 404
    assert (await bob.get(f"/web/live?view=campaign&campaign={campaign_id}")).status_code == 404
    await bob.get("/web/campaigns")
    assert (await bob.post(f"/web/campaigns/{campaign_id}/cancel", {})).status_code == 404
    assert views.campaign(fleet.engine, fleet.acme, campaign_id).state == "running"  # type: ignore[union-attr]


async def test_a_signed_out_upload_is_refused_unread(
    fleet: CampaignFleet, client: httpx.AsyncClient
) -> None:
    # A body no multipart parser takes: read, it would be refused as malformed (400).
    response = await client.post(
        "/web/campaigns",
        content=b"\x00not multipart at all" * 1000,
        headers={"Content-Type": "multipart/form-data; boundary=nothing-here"},
    )
    assert response.status_code == 401
    assert views.list_campaigns(fleet.engine, None) == []


async def test_the_api_makes_lists_reads_and_changes_campaigns(
    fleet: CampaignFleet, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/api/campaigns")).status_code == 401
    made = await client.post(
        "/api/campaigns",
        json={"image": "bolt-only.bin", "edges": ["depot-1", "depot-2"], "targets": ["ACME/*"]},
        headers=TOKEN,
    )
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["fleet_id"] == fleet.acme and body["patterns"] == ["ACME/*"]
    assert [(t["edge_id"], t["stage"]) for t in body["targets"]] == [
        ("depot-1", "offered"),
        ("depot-2", "offered"),
    ]
    assert body["targets"][1]["edge_state"] == "offline"
    campaign_id = body["campaign_id"]
    mixed = await client.post(
        "/api/campaigns", json={"image": IMAGE, "edges": ["depot-1", "bolt-1"]}, headers=TOKEN
    )
    assert mixed.status_code == 422 and "several fleets" in mixed.json()["detail"]
    bad = await client.post(
        "/api/campaigns",
        json={"image": IMAGE, "edges": ["depot-1"], "targets": ["x"]},
        headers=TOKEN,
    )
    assert bad.status_code == 422 and "VENDOR/MODEL" in bad.json()["detail"]
    missing = await client.post(
        "/api/campaigns", json={"image": "none.bin", "edges": ["depot-1"]}, headers=TOKEN
    )
    assert missing.status_code == 422 and "no firmware image" in missing.json()["detail"]

    listed = (await client.get(f"/api/campaigns?fleet={fleet.acme}", headers=TOKEN)).json()
    assert [c["campaign_id"] for c in listed] == [campaign_id]
    assert (await client.get(f"/api/campaigns?fleet={fleet.bolt}", headers=TOKEN)).json() == []
    paused = await client.post(f"/api/campaigns/{campaign_id}/pause", headers=TOKEN)
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert paused.json()["state_by"] == "token"
    conflict = await client.post(f"/api/campaigns/{campaign_id}/pause", headers=TOKEN)
    assert conflict.status_code == 409
    assert (await client.post("/api/campaigns/4242/cancel", headers=TOKEN)).status_code == 404
    assert (await client.get("/api/campaigns/4242", headers=TOKEN)).status_code == 404
    assert (await client.post(f"/api/campaigns/{campaign_id}/go", headers=TOKEN)).status_code == 422
    one = (await client.get(f"/api/campaigns/{campaign_id}?stage=offered", headers=TOKEN)).json()
    assert len(one["targets"]) == 2 and one["more_targets"] == 0
    assert [(e.action, e.actor) for e in await _audit(fleet, "campaign.")] == [
        ("campaign.pause", "token"),
        ("campaign.create", "token"),
    ]


async def _audit(fleet: CampaignFleet, prefix: str) -> list[object]:
    entries = recent(fleet.engine, fleet.acme, 50)
    return [entry for entry in entries if entry.action.startswith(prefix)]
