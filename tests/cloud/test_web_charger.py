"""The charger page, its operator command forms and the audit log page, through the real
ASGI app on SQLite and PostgreSQL: what the page shows (also of an offline edge), who may
send a command, CSRF, one fleet never reaching another's charger, and a command sent from
the page being the API's command, with its actor, and in the audit log."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from cloud.store import fleets
from cloud.store.audit import record
from cloud.store.ingest import store_batch
from cloud.store.schema import commands, connector_history
from tests.cloud import payloads
from tests.cloud.web import add_user, browser, charger_events, set_presence, sync_edge

CHARGER = "/web/edges/depot-1/chargers/CP-1"
OFFLINE_CHARGER = "/web/edges/depot-2/chargers/CP-9"
TOKEN = {"Authorization": "Bearer machine-token"}


@pytest.fixture
def two_fleets(engine: Engine) -> tuple[int, int]:
    """Fleet Acme (ann, operator; vic, viewer; ada, admin) with depot-1 online, its CP-1
    having charged once, and depot-2 offline; fleet Bolt (bob, operator) with bolt-1."""
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    add_user(engine, "ann@acme.test", "operator", acme)
    add_user(engine, "vic@acme.test", "viewer", acme)
    add_user(engine, "ada@acme.test", "admin", acme)
    add_user(engine, "bob@bolt.test", "operator", bolt)
    fleets.assign_edge(engine, "depot-1", acme, site_name="Depot North")
    fleets.assign_edge(engine, "depot-2", acme, site_name="Depot South")
    fleets.assign_edge(engine, "bolt-1", bolt, site_name="Bolt HQ")
    statuses = [
        (1, "Available", "NoError"),
        (1, "Preparing", "NoError"),
        (1, "Charging", "NoError"),
    ]
    session = [payloads.transaction_started(41), payloads.transaction_stopped(41, 7400)]
    sync_edge(engine, "depot-1", [*charger_events("CP-1", statuses), *session])
    set_presence(engine, "depot-1", "online", backlog=0)
    sync_edge(engine, "depot-2", charger_events("CP-9", [(1, "Faulted", "GroundFailure")]))
    set_presence(engine, "depot-2", "offline")
    sync_edge(engine, "bolt-1", charger_events("BOLT-CP", [(1, "Available", "NoError")]))
    set_presence(engine, "bolt-1", "online", backlog=0)
    return acme, bolt


def stored_commands(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(commands)).scalar_one())


async def test_the_charger_page_shows_status_history_sessions_and_what_the_cloud_lacks(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as person:
        await person.sign_in("vic@acme.test")
        site = await person.get("/web/sites/depot-1")
        assert f'href="{CHARGER}"' in site.text
        page = await person.get(CHARGER)
    assert page.status_code == 200
    assert 'data-status="Charging">Charging' in page.text
    history = re.findall(r'<tr data-seq="\d+"><td>.*?</td><td>1</td><td>(\w+)</td>', page.text)
    assert history == ["Charging", "Preparing", "Available"]  # newest first
    assert 'data-transaction="41"' in page.text and "7.40 kWh" in page.text
    assert "holds no configuration snapshot" in page.text
    assert "No command sent to this charger yet" in page.text
    # A viewer sees no command forms.
    assert 'data-action="reset"' not in page.text and "Send a command" not in page.text


async def test_an_offline_edges_charger_is_last_known_not_faulted(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        page = await person.get(OFFLINE_CHARGER)
    assert page.status_code == 200
    assert "The edge is offline" in page.text
    assert re.search(r'class="lastknown" data-status="Faulted">last known at <time', page.text)
    assert 'class="concern alert">GroundFailure' not in page.text


async def test_a_viewer_cannot_send_a_command(engine: Engine, two_fleets: tuple[int, int]) -> None:
    async with browser(engine) as person:
        await person.sign_in("vic@acme.test")
        await person.get(CHARGER)
        refused = await person.post(f"{CHARGER}/commands", {"action": "reset", "type": "Hard"})
    assert refused.status_code == 403 and "operator role" in refused.text
    assert stored_commands(engine) == 0


async def test_a_command_without_the_csrf_token_or_from_another_site_is_refused(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    form = {"action": "reset", "type": "Soft", "expires_in_min": "60"}
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        await person.get(CHARGER)
        without = await person.client.post(f"{CHARGER}/commands", data=form)
        guessed = await person.client.post(f"{CHARGER}/commands", data=form | {"csrf_token": "x"})
        elsewhere = await person.post(
            f"{CHARGER}/commands", form, headers={"Origin": "https://evil.example"}
        )
    assert without.status_code == guessed.status_code == elsewhere.status_code == 403
    assert stored_commands(engine) == 0


async def test_another_fleets_charger_is_not_found(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    theirs = "/web/edges/bolt-1/chargers/BOLT-CP"
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        await person.get(CHARGER)
        page = await person.get(theirs)
        nowhere = await person.get("/web/edges/depot-1/chargers/NO-SUCH")
        posted = await person.post(f"{theirs}/commands", {"action": "reset", "type": "Hard"})
        live = await person.get("/web/live?view=charger&edge=bolt-1&charger=BOLT-CP")
    assert page.status_code == nowhere.status_code == posted.status_code == live.status_code == 404
    assert "BOLT-CP" not in page.text
    assert stored_commands(engine) == 0
    async with browser(engine) as other:
        await other.sign_in("bob@bolt.test")
        assert (await other.get(theirs)).status_code == 200


async def test_a_command_sent_from_the_page_is_the_apis_and_in_the_audit_log(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        page = await person.get(CHARGER)
        assert 'data-action="remote_start"' in page.text and 'data-action="trigger"' in page.text
        sent = await person.post(
            f"{CHARGER}/commands", {"action": "reset", "type": "Hard", "expires_in_min": "60"}
        )
        assert sent.status_code == 303 and sent.headers["location"] == f"{CHARGER}#commands"
        listed = await person.client.get("/api/edges/depot-1/commands", headers=TOKEN)
        assert listed.status_code == 200
        [command] = listed.json()
        assert command["action"] == "reset" and command["arguments"] == {"type": "Hard"}
        assert command["actor"] == "ann@acme.test" and command["status"] == "pending"
        assert command["charger_id"] == "CP-1"
        # The edge runs it and reports: the page shows the outcome.
        result = {
            "kind": "command.result",
            "command_id": command["id"],
            "status": "done",
            "detail": "Reset: Accepted",
        }
        sync_edge(engine, "depot-1", [result], first_seq=8)
        page = await person.get(CHARGER)
        assert f'data-command="{command["id"]}" data-outcome="done"' in page.text
        assert "Reset: Accepted" in page.text
        # One sent through the API with the bearer token: the same list, the same log.
        by_api = await person.client.post(
            "/api/edges/depot-1/commands",
            json={"charger_id": "CP-1", "action": "unlock", "arguments": {"connector_id": 1}},
            headers=TOKEN,
        )
        assert by_api.status_code == 200
        page = await person.get(CHARGER)
        assert re.search(r"<td>token</td>\s*<td>unlock", page.text)
        # Operators do not read the audit log.
        assert (await person.get("/web/audit")).status_code == 403
    async with browser(engine) as admin:
        await admin.sign_in("ada@acme.test")
        log = await admin.get("/web/audit")
    assert log.status_code == 200
    actions = re.findall(r'data-action="([^"]+)"><td>.*?</td><td>([^<]+)</td>', log.text)
    # Newest first: ada's sign-in, the token's command, ann's command, ann's sign-in.
    assert actions == [
        ("login", "ada@acme.test"),
        ("command.unlock", "token"),
        ("command.reset", "ann@acme.test"),
        ("login", "ann@acme.test"),
    ]
    assert "depot-1/CP-1" in log.text and command["id"] in log.text


async def test_a_command_for_an_offline_edge_says_it_is_queued_until_its_expiry(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        await person.get(OFFLINE_CHARGER)
        # As htmx sends it: the commands' fragment comes back in place.
        fragment = await person.client.post(
            f"{OFFLINE_CHARGER}/commands",
            data={"action": "unlock", "connector_id": "1", "expires_in_min": "15"},
            headers={"HX-Request": "true", "X-CSRF-Token": person.csrf},
        )
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "queued until <time" in fragment.text and "(edge offline)" in fragment.text
    assert "ann@acme.test" in fragment.text and "connector_id=1" in fragment.text


@pytest.mark.parametrize(
    "form",
    [
        {"action": "remote_start", "id_tag": ""},
        {"action": "remote_start", "id_tag": "X" * 21},
        {"action": "remote_stop", "transaction_id": "-1"},
        {"action": "reset", "type": "Gentle"},
        {"action": "unlock", "connector_id": "²"},
        {"action": "trigger", "requested_message": "Explode"},
        {"action": "firmware_rollout"},
        {"action": "reset", "type": "Soft", "expires_in_min": "99999"},
    ],
)
async def test_a_command_form_that_cannot_make_a_command_says_why_and_stores_nothing(
    engine: Engine, two_fleets: tuple[int, int], form: dict[str, str]
) -> None:
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        await person.get(CHARGER)
        refused = await person.post(f"{CHARGER}/commands", form)
        inline = await person.client.post(
            f"{CHARGER}/commands",
            data=form,
            headers={"HX-Request": "true", "X-CSRF-Token": person.csrf},
        )
    assert refused.status_code == 422 and "The command was not sent" in refused.text
    assert inline.status_code == 200 and 'role="alert">The command was not sent' in inline.text
    assert stored_commands(engine) == 0


async def test_the_audit_log_pages_newest_first_within_the_fleet(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    acme, bolt = two_fleets
    at = datetime(2026, 3, 1, tzinfo=UTC)
    for number in range(60):
        record(
            engine,
            at=at,
            actor="ann@acme.test",
            fleet_id=acme,
            action="cards.set",
            target=f"t-{number}",
        )
    record(
        engine,
        at=at,
        actor="bob@bolt.test",
        fleet_id=bolt,
        action="cards.set",
        target="bolt-secret",
    )
    async with browser(engine) as admin:
        await admin.sign_in("ada@acme.test")
        first = await admin.get("/web/audit")
        older = re.search(r'href="(/web/audit\?before=\d+)" rel="next"', first.text)
        assert older is not None
        second = await admin.get(older.group(1))
    target = re.compile(
        r'data-entry="\d+" data-action="[^"]+"><td>.*?</td>(?:<td>[^<]*</td>){2}<td>([^<]*)</td>'
    )
    first_targets = target.findall(first.text)
    second_targets = target.findall(second.text)
    assert len(re.findall(r"<tr data-entry=", first.text)) == 50
    assert first_targets == ["ada@acme.test"] + [f"t-{number}" for number in range(59, 10, -1)]
    assert second_targets == [f"t-{number}" for number in range(10, -1, -1)]
    assert 'rel="next"' not in second.text
    assert "bolt-secret" not in first.text + second.text


def test_the_status_history_keeps_the_latest_per_charger(engine: Engine) -> None:
    statuses = ["Available", "Preparing", "Charging", "SuspendedEV", "Finishing"]
    data = [
        {
            "kind": "charger.status",
            "charger_id": charger,
            "connector_id": 1,
            "status": status,
            "error_code": "NoError",
        }
        for status in statuses
        for charger in ("CP-1", "CP-2")
    ]
    events = [payloads.event(seq, item) for seq, item in enumerate(data, start=1)]
    first, second = events[:6], events[6:]
    for part in (first, second):
        result = store_batch(engine, "site-1", payloads.batch("site-1", part), status_history=3)
        assert result.rejected is None
    with engine.connect() as connection:
        rows = connection.execute(
            select(connector_history.c.charger_id, connector_history.c.status).order_by(
                connector_history.c.charger_id, connector_history.c.seq
            )
        ).all()
    kept = ["Charging", "SuspendedEV", "Finishing"]
    assert [tuple(row) for row in rows] == [("CP-1", s) for s in kept] + [("CP-2", s) for s in kept]
