"""The fleet web view's skeleton through the real ASGI app on SQLite and PostgreSQL:
signing in and out, sessions, CSRF, roles, one fleet never seeing another's edges, the
overview and site pages, static files."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine, select

from cloud.store import fleets, users
from cloud.store.audit import recent
from cloud.store.schema import DEFAULT_FLEET_ID, edges
from tests.cloud.web import (
    add_user,
    browser,
    charger_events,
    set_presence,
    sync_edge,
    web_settings,
)


@pytest.fixture
def two_fleets(engine: Engine) -> tuple[int, int]:
    """Fleet Acme (ann, operator; vic, viewer; ada, admin) with edge depot-1 online and
    depot-2 offline; fleet Bolt (bob) with edge bolt-1."""
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    add_user(engine, "ann@acme.test", "operator", acme)
    add_user(engine, "vic@acme.test", "viewer", acme)
    add_user(engine, "ada@acme.test", "admin", acme)
    add_user(engine, "bob@bolt.test", "admin", bolt)
    for edge_id, fleet_id, name in [
        ("depot-1", acme, "Depot North"),
        ("depot-2", acme, "Depot South"),
        ("bolt-1", bolt, "Bolt HQ"),
    ]:
        fleets.assign_edge(engine, edge_id, fleet_id, site_name=name, location="Lyon")
    sync_edge(engine, "depot-1", charger_events("CP-1", [(1, "Charging", "NoError")]))
    set_presence(engine, "depot-1", "online", backlog=0, disk_free_mb=9000.0, uptime_s=7200.0)
    sync_edge(engine, "depot-2", charger_events("CP-9", [(1, "Faulted", "GroundFailure")]))
    set_presence(engine, "depot-2", "offline")
    sync_edge(engine, "bolt-1", charger_events("BOLT-CP", [(1, "Available", "NoError")]))
    set_presence(engine, "bolt-1", "online", backlog=0)
    return acme, bolt


async def test_a_page_without_a_session_sends_to_the_sign_in_form(engine: Engine) -> None:
    async with browser(engine) as person:
        response = await person.get("/web/sites/depot-1?x=1")
        assert response.status_code == 303
        assert response.headers["location"] == "/web/login?next=/web/sites/depot-1%3Fx%3D1"
        form = await person.get(response.headers["location"])
        assert form.status_code == 200 and 'name="password"' in form.text
        assert form.headers["content-security-policy"].startswith("default-src 'self'")
        cookie = form.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/web" in cookie
        # The bearer token opens the API, not the view.
        token = {"Authorization": "Bearer machine-token"}
        assert (await person.get("/web/", headers=token)).status_code == 303


async def test_signing_in_shows_the_fleet_overview_of_ones_own_fleet_only(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as person:
        response = await person.sign_in("Ann@Acme.test")
        assert response.status_code == 303 and response.headers["location"] == "/web/"
        page = await person.get("/web/")
        assert page.status_code == 200
        assert "Depot North" in page.text and "Depot South" in page.text
        assert "bolt-1" not in page.text and "Bolt HQ" not in page.text
        # The offline site needing attention comes first.
        assert page.text.index("Depot South") < page.text.index("Depot North")
        rows = re.findall(r'data-edge="([^"]+)" data-state="([^"]+)"', page.text)
        assert rows == [("depot-2", "offline"), ("depot-1", "online")]
    entries = recent(engine, two_fleets[0])
    assert [(entry.actor, entry.action) for entry in entries] == [("ann@acme.test", "login")]


async def test_another_fleets_site_is_not_found_like_one_that_does_not_exist(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        theirs = await person.get("/web/sites/bolt-1")
        nowhere = await person.get("/web/sites/no-such-edge")
        not_an_id = await person.get("/web/sites/%2B%23")
        assert theirs.status_code == nowhere.status_code == not_an_id.status_code == 404
        assert "BOLT-CP" not in theirs.text
        live = await person.get("/web/live?view=site&edge=bolt-1")
        assert live.status_code == 404
    async with browser(engine) as other:
        await other.sign_in("bob@bolt.test")
        page = await other.get("/web/sites/bolt-1")
        assert page.status_code == 200 and "BOLT-CP" in page.text


async def test_an_offline_sites_chargers_are_last_known_not_faults(
    engine: Engine, two_fleets: tuple[int, int]
) -> None:
    async with browser(engine) as person:
        await person.sign_in("vic@acme.test")
        offline = await person.get("/web/sites/depot-2")
        online = await person.get("/web/sites/depot-1")
    assert "This site is offline" in offline.text
    assert re.search(r'class="lastknown" data-status="Faulted">last known at', offline.text)
    assert 'class="concern alert">GroundFailure' not in offline.text
    assert 'data-status="Charging">Charging' in online.text
    assert "This site is offline" not in online.text


async def test_a_fault_on_an_online_site_needs_attention(engine: Engine) -> None:
    add_user(engine, "ops@default.test", "viewer", DEFAULT_FLEET_ID)
    sync_edge(engine, "site-a", charger_events("CP-1", [(1, "Faulted", "GroundFailure")]))
    set_presence(engine, "site-a", "online", backlog=0)
    async with browser(engine) as person:
        await person.sign_in("ops@default.test")
        page = await person.get("/web/sites/site-a")
    assert 'class="concern alert">GroundFailure' in page.text
    assert "1 connectors faulted" in page.text


async def test_wrong_passwords_are_refused_then_the_address_must_wait(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    settings = web_settings(max_login_failures=3, login_failure_window=600)
    async with browser(engine, settings) as person:
        for _ in range(3):
            wrong = await person.sign_in("ann@acme.test", "not the password at all")
            assert wrong.status_code == 401 and "Wrong email or password" in wrong.text
        unknown = await person.sign_in("nobody@acme.test")
        assert unknown.status_code == 429 and int(unknown.headers["retry-after"]) > 0
        # The right password from that address waits too.
        assert (await person.sign_in("ann@acme.test")).status_code == 429
    async with browser(engine, settings, client="127.0.0.9") as elsewhere:
        assert (await elsewhere.sign_in("ann@acme.test")).status_code == 303
    assert [entry.action for entry in recent(engine, DEFAULT_FLEET_ID)][-3:] == ["login.failed"] * 3


async def test_a_post_without_the_sessions_csrf_token_changes_nothing(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        missing = await person.client.post("/web/logout", data={})
        forged = await person.client.post("/web/logout", data={"csrf_token": "guess"})
        other_site = await person.client.post(
            "/web/logout",
            data={"csrf_token": person.csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert missing.status_code == forged.status_code == other_site.status_code == 403
        assert (await person.get("/web/")).status_code == 200  # still signed in
        by_header = await person.client.post(
            "/web/logout", headers={"X-CSRF-Token": person.csrf, "HX-Request": "true"}
        )
        assert by_header.status_code == 303
        assert (await person.get("/web/")).status_code == 303


async def test_the_sign_in_form_needs_its_csrf_token_too(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with browser(engine) as person:
        await person.get("/web/login")
        response = await person.client.post(
            "/web/login", data={"email": "ann@acme.test", "password": "x" * 12}
        )
        assert response.status_code == 403


async def test_signing_out_ends_the_session_also_for_a_copied_cookie(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with browser(engine) as person, browser(engine) as thief:
        await person.sign_in("ann@acme.test")
        thief.client.cookies = person.client.cookies
        assert (await thief.get("/web/")).status_code == 200
        assert (await person.post("/web/logout", {})).status_code == 303
        assert (await thief.get("/web/")).status_code == 303
        assert (await person.get("/web/")).status_code == 303
    actions = [entry.action for entry in recent(engine, DEFAULT_FLEET_ID)]
    assert actions[:2] == ["logout", "login"]


async def test_a_disabled_user_is_out_at_the_next_request(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        assert (await person.get("/web/")).status_code == 200
        users.disable_user(engine, "ann@acme.test")
        assert (await person.get("/web/")).status_code == 303
        assert (await person.sign_in("ann@acme.test")).status_code == 401


async def test_a_forged_or_tampered_cookie_is_no_session(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        cookie = person.client.cookies["ocpp_cloud_session"]
        person.client.cookies.clear()
        person.client.cookies.set("ocpp_cloud_session", cookie[:-2] + "xx", path="/web")
        assert (await person.get("/web/")).status_code == 303
    async with browser(engine, web_settings()) as other_replica:
        # Another app on the same store signs with the same shared key: a valid cookie.
        other_replica.client.cookies.set("ocpp_cloud_session", cookie, path="/web")
        assert (await other_replica.get("/web/")).status_code == 200


async def test_roles_are_checked_on_every_page(engine: Engine, two_fleets: tuple[int, int]) -> None:
    async with browser(engine) as viewer:
        await viewer.sign_in("vic@acme.test")
        assert (await viewer.get("/web/users")).status_code == 403
    async with browser(engine) as admin:
        await admin.sign_in("ada@acme.test")
        page = await admin.get("/web/users")
        assert page.status_code == 200
        assert "ann@acme.test" in page.text and "bob@bolt.test" not in page.text


async def test_an_htmx_request_without_a_session_is_told_where_to_sign_in(engine: Engine) -> None:
    async with browser(engine) as person:
        response = await person.get("/web/", headers={"HX-Request": "true"})
        assert response.status_code == 401
        assert response.headers["hx-redirect"].startswith("/web/login?next=")


async def test_sign_in_goes_back_only_to_a_page_of_the_view(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with browser(engine) as person:
        await person.get("/web/login")
        for target, landing in [
            ("/web/sites/x", "/web/sites/x"),
            ("https://evil.example/", "/web/"),
            ("//evil.example/web/", "/web/"),
            ("/api/edges", "/web/"),
        ]:
            response = await person.post(
                "/web/login",
                {
                    "email": "ann@acme.test",
                    "password": "correct horse battery staple",
                    "next": target,
                },
            )
            assert response.headers["location"] == landing
            await person.get("/web/")  # the signed-in session's token


async def test_static_files_are_served_with_long_cache_headers(engine: Engine) -> None:
    async with browser(engine) as person:
        form = await person.get("/web/login")
        scripts = re.findall(r'src="(/web/static/[^"]+)"', form.text)
        assert any("htmx.min.js?v=" in script for script in scripts)
        for script in scripts:
            response = await person.get(script)
            assert response.status_code == 200
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert (await person.get("/web/static/../app.py")).status_code == 404
        assert (await person.get("/web/static/vendor/VERSIONS")).status_code == 404


async def test_new_edges_go_into_the_default_fleet(engine: Engine) -> None:
    sync_edge(engine, "fresh-edge", charger_events("CP-1", [(1, "Available", "NoError")]))
    with engine.connect() as connection:
        fleet_id = connection.execute(
            select(edges.c.fleet_id).where(edges.c.id == "fresh-edge")
        ).scalar_one()
    assert fleet_id == DEFAULT_FLEET_ID
