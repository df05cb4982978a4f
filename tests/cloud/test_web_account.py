"""Sessions kept in the store and the sign-in limit shared by replicas, through the real
ASGI app on SQLite and PostgreSQL: signing out ends one session; a user ends another of
theirs, an admin all of a user's, a password change every other; sessions are bounded per
user and swept when expired; failed sign-ins are counted in the store, so two app
instances on one store (two replicas) hold one limit, also for requests at once."""

from __future__ import annotations

import asyncio
import io
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import Engine, select, update

from cloud.cli import main
from cloud.store import fleets, sign_ins, users
from cloud.store.audit import recent
from cloud.store.schema import DEFAULT_FLEET_ID, sign_in_attempts, web_sessions
from cloud.web.app import session_secret
from cloud.web.passwords import verify_password
from tests.cloud.web import PASSWORD, Browser, add_user, browser, web_settings

WRONG = "not the password at all"


def session_rows(engine: Engine, user_id: int) -> list[int]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(web_sessions.c.id)
                .where(web_sessions.c.user_id == user_id)
                .order_by(web_sessions.c.id)
            ).scalars()
        )


async def signed_in(person: Browser) -> bool:
    response = await person.get("/web/")
    assert response.status_code in (200, 303)
    return response.status_code == 200


# -- sessions ---------------------------------------------------------------------------


async def test_signing_out_ends_this_session_and_no_other(engine: Engine) -> None:
    ann = add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with browser(engine) as laptop, browser(engine) as phone, browser(engine) as thief:
        await laptop.sign_in("ann@acme.test")
        await phone.sign_in("ann@acme.test")
        assert len(session_rows(engine, ann.user_id)) == 2
        thief.client.cookies = laptop.client.cookies
        assert (await laptop.post("/web/logout", {})).status_code == 303
        assert not await signed_in(laptop)
        assert not await signed_in(thief)  # a copy of the ended session's cookie is worth nothing
        assert await signed_in(phone)
    assert len(session_rows(engine, ann.user_id)) == 1


async def test_a_user_sees_their_sessions_and_ends_another_one(engine: Engine) -> None:
    ann = add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    bob = add_user(engine, "bob@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with (
        browser(engine) as laptop,
        browser(engine, client="127.0.0.7") as phone,
        browser(engine) as other,
    ):
        await laptop.sign_in("ann@acme.test")
        await phone.sign_in("ann@acme.test")
        await other.sign_in("bob@acme.test")
        page = await laptop.get("/web/account")
        assert page.status_code == 200
        shown = re.findall(r'<tr data-session="(\d+)"( class="this-session")?', page.text)
        assert len(shown) == 2 and "127.0.0.7" in page.text
        (phone_session,) = [int(number) for number, this in shown if not this]
        # Another user's session is not found, and goes on.
        (bobs,) = session_rows(engine, bob.user_id)
        refused = await laptop.post(f"/web/account/sessions/{bobs}/end", {})
        assert refused.status_code == 404
        assert await signed_in(other)
        # Without the form's token: nothing ends.
        forged = await laptop.client.post(f"/web/account/sessions/{phone_session}/end")
        assert forged.status_code == 403 and await signed_in(phone)
        ended = await laptop.post(f"/web/account/sessions/{phone_session}/end", {})
        assert ended.status_code == 303 and ended.headers["location"] == "/web/account"
        assert not await signed_in(phone)
        assert await signed_in(laptop)
    assert len(session_rows(engine, ann.user_id)) == 1
    assert ("ann@acme.test", "session.end") in [
        (entry.actor, entry.action) for entry in recent(engine, DEFAULT_FLEET_ID)
    ]


async def test_a_user_ends_every_other_session_at_once(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with browser(engine) as one, browser(engine) as two, browser(engine) as three:
        for person in (one, two, three):
            await person.sign_in("ann@acme.test")
        await one.get("/web/account")
        assert (await one.post("/web/account/sessions/end-others", {})).status_code == 303
        assert [await signed_in(person) for person in (one, two, three)] == [True, False, False]


async def test_an_admin_ends_every_session_of_a_user_of_their_fleet_only(engine: Engine) -> None:
    acme = fleets.add_fleet(engine, "Acme").fleet_id
    bolt = fleets.add_fleet(engine, "Bolt").fleet_id
    ann = add_user(engine, "ann@acme.test", "operator", acme)
    add_user(engine, "ada@acme.test", "admin", acme)
    add_user(engine, "vic@acme.test", "viewer", acme)
    add_user(engine, "bob@bolt.test", "admin", bolt)
    async with (
        browser(engine) as laptop,
        browser(engine) as phone,
        browser(engine) as admin,
        browser(engine) as viewer,
        browser(engine) as stranger,
    ):
        await laptop.sign_in("ann@acme.test")
        await phone.sign_in("ann@acme.test")
        await admin.sign_in("ada@acme.test")
        await viewer.sign_in("vic@acme.test")
        await stranger.sign_in("bob@bolt.test")
        target = f"/web/users/{ann.user_id}/sessions/end"
        assert (await viewer.post(target, {})).status_code == 403
        assert (await stranger.post(target, {})).status_code == 404
        assert await signed_in(laptop) and await signed_in(phone)
        page = await admin.get("/web/users")
        assert 'data-user="ann@acme.test" data-sessions="2"' in page.text
        assert "bob@bolt.test" not in page.text
        ended = await admin.post(target, {})
        assert ended.status_code == 303 and ended.headers["location"] == "/web/users"
        assert not await signed_in(laptop) and not await signed_in(phone)
        assert await signed_in(admin)
        # Ann signs in again: a new session, not one of those ended.
        assert (await laptop.sign_in("ann@acme.test")).status_code == 303
    entries = [(entry.actor, entry.action, entry.target) for entry in recent(engine, acme)]
    assert ("ada@acme.test", "sessions.end_all", "ann@acme.test") in entries


async def test_a_password_change_ends_every_other_session(engine: Engine) -> None:
    ann = add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    new = "a brand new long password"
    async with browser(engine) as laptop, browser(engine) as phone:
        await laptop.sign_in("ann@acme.test")
        await phone.sign_in("ann@acme.test")
        await laptop.get("/web/account")
        wrong = await laptop.post(
            "/web/account/password", {"current": WRONG, "new": new, "repeated": new}
        )
        assert wrong.status_code == 422 and "The current password is wrong" in wrong.text
        short = await laptop.post(
            "/web/account/password", {"current": PASSWORD, "new": "short", "repeated": "short"}
        )
        assert short.status_code == 422 and "at least 10 characters" in short.text
        differ = await laptop.post(
            "/web/account/password", {"current": PASSWORD, "new": new, "repeated": new + "!"}
        )
        assert differ.status_code == 422 and "differ" in differ.text
        assert await signed_in(phone)  # nothing changed yet
        changed = await laptop.post(
            "/web/account/password", {"current": PASSWORD, "new": new, "repeated": new}
        )
        assert changed.status_code == 200 and "1 other sessions ended" in changed.text
        assert await signed_in(laptop)
        assert not await signed_in(phone)
        assert (await phone.sign_in("ann@acme.test")).status_code == 401
        assert (await phone.sign_in("ann@acme.test", new)).status_code == 303
    assert len(session_rows(engine, ann.user_id)) == 2
    actions = [entry.action for entry in recent(engine, DEFAULT_FLEET_ID)]
    assert "password.change" in actions and "password.change_failed" in actions


async def test_sessions_are_bounded_per_user_the_oldest_ending(engine: Engine) -> None:
    ann = add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    settings = web_settings(max_sessions_per_user=2)
    async with (
        browser(engine, settings) as first,
        browser(engine, settings) as second,
        browser(engine, settings) as third,
    ):
        for person in (first, second, third):
            assert (await person.sign_in("ann@acme.test")).status_code == 303
        assert [await signed_in(person) for person in (first, second, third)] == [
            False,
            True,
            True,
        ]
    assert len(session_rows(engine, ann.user_id)) == 2


async def test_an_expired_session_ends_and_its_row_is_swept_at_the_next_sign_in(
    engine: Engine,
) -> None:
    ann = add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    add_user(engine, "bob@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with browser(engine) as person, browser(engine) as other:
        await person.sign_in("ann@acme.test")
        (row,) = session_rows(engine, ann.user_id)
        with engine.begin() as connection:
            connection.execute(
                update(web_sessions)
                .where(web_sessions.c.id == row)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert not await signed_in(person)  # its cookie is still good; its row is not
        assert session_rows(engine, ann.user_id) == [row]
        await other.sign_in("bob@acme.test")  # anyone's sign-in sweeps it
    assert session_rows(engine, ann.user_id) == []


async def test_a_session_in_use_is_renewed_in_the_store(engine: Engine) -> None:
    ann = add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    async with browser(engine) as person:
        await person.sign_in("ann@acme.test")
        soon = datetime.now(UTC) + timedelta(seconds=100)
        with engine.begin() as connection:
            connection.execute(
                update(web_sessions)
                .where(web_sessions.c.user_id == ann.user_id)
                .values(expires_at=soon)
            )
        # A cookie signed more than a minute ago is signed again, and its row renewed.
        cookie = person.client.cookies["ocpp_cloud_session"]
        person.client.cookies.clear()
        person.client.cookies.set("ocpp_cloud_session", aged(cookie, engine), path="/web")
        assert await signed_in(person)
    with engine.connect() as connection:
        expires = connection.execute(select(web_sessions.c.expires_at)).scalar_one()
    assert expires > soon + timedelta(seconds=1000)


def aged(cookie: str, engine: Engine) -> str:
    """The same session's cookie as if signed two minutes ago."""

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 120

    secret = session_secret(web_settings().web, engine)
    signer = URLSafeTimedSerializer(secret, salt="ocpp-cloud web session", signer=Earlier)
    return signer.dumps(signer.loads(cookie))


# -- the sign-in limit --------------------------------------------------------------------


async def test_failed_sign_ins_are_counted_across_replicas(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    settings = web_settings(max_login_failures=3, login_failure_window=600)
    async with browser(engine, settings) as one, browser(engine, settings) as two:
        assert (await one.sign_in("ann@acme.test", WRONG)).status_code == 401
        assert (await two.sign_in("ann@acme.test", WRONG)).status_code == 401
        assert (await one.sign_in("ann@acme.test", WRONG)).status_code == 401
        # Three in all from this address: the next waits, on either replica.
        for replica in (two, one):
            refused = await replica.sign_in("ann@acme.test")
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0


async def test_sign_ins_at_once_on_two_replicas_cannot_pass_the_limit(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    settings = web_settings(max_login_failures=3, login_failure_window=600)
    async with browser(engine, settings) as one, browser(engine, settings) as two:
        await one.get("/web/login")
        await two.get("/web/login")

        async def attempt(replica: Browser) -> int:
            form = {"email": "ann@acme.test", "password": WRONG}
            response: httpx.Response = await replica.post("/web/login", form)
            return response.status_code

        answers = await asyncio.gather(*[attempt(replica) for replica in (one, two) * 4])
    assert sorted(answers) == [401] * 3 + [429] * 5


async def test_the_account_limit_holds_from_any_address(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    add_user(engine, "bob@acme.test", "viewer", DEFAULT_FLEET_ID)
    settings = web_settings(max_login_failures=100, max_login_failures_per_account=2)
    for address in ("10.0.0.1", "10.0.0.2"):
        async with browser(engine, settings, client=address) as person:
            assert (await person.sign_in("Ann@Acme.test ", WRONG)).status_code == 401
    async with browser(engine, settings, client="10.0.0.3") as person:
        assert (await person.sign_in("ann@acme.test")).status_code == 429
        # Another account from the same address is not held back.
        assert (await person.sign_in("bob@acme.test")).status_code == 303


async def test_a_successful_sign_in_gives_its_place_back(engine: Engine) -> None:
    add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    settings = web_settings(max_login_failures=2)
    for _ in range(4):  # more successes than the limit: never held back
        async with browser(engine, settings) as person:
            assert (await person.sign_in("ann@acme.test")).status_code == 303
    async with browser(engine, settings) as person:
        assert (await person.sign_in("ann@acme.test", WRONG)).status_code == 401
        assert (await person.sign_in("ann@acme.test", WRONG)).status_code == 401
        assert (await person.sign_in("ann@acme.test")).status_code == 429


def test_attempts_of_an_ended_window_start_again_and_are_swept(engine: Engine) -> None:
    start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    limits = [sign_ins.Limit("address", "192.0.2.1", 2)]
    assert sign_ins.reserve(engine, limits, start, 60).granted
    assert sign_ins.reserve(engine, limits, start + timedelta(seconds=10), 60).granted
    refused = sign_ins.reserve(engine, limits, start + timedelta(seconds=20), 60)
    assert not refused.granted and refused.retry_after_s == pytest.approx(40)
    # A refused attempt counts nothing.
    later = start + timedelta(seconds=30)
    assert sign_ins.attempts_counted(engine, "address", "192.0.2.1", later, 60) == 2
    # The window over: counting starts again.
    assert sign_ins.reserve(engine, limits, start + timedelta(seconds=61), 60).granted
    other = [sign_ins.Limit("account", "ann@acme.test", 5)]
    assert sign_ins.reserve(engine, other, start + timedelta(seconds=61), 60).granted
    assert sign_ins.sweep(engine, start + timedelta(seconds=125), 60) == 2
    with engine.connect() as connection:
        kept = connection.execute(select(sign_in_attempts.c.key_digest)).all()
    assert kept == []
    # What was typed is never stored, only its digest.
    sign_ins.reserve(engine, other, start, 60)
    with engine.connect() as connection:
        (digest,) = connection.execute(select(sign_in_attempts.c.key_digest)).scalars()
    assert "ann" not in digest and len(digest) == 64


def test_users_command_signs_a_user_out_and_sets_a_password(
    engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ann = add_user(engine, "ann@acme.test", "viewer", DEFAULT_FLEET_ID)
    config = tmp_path / "cloud.toml"
    url = engine.url.render_as_string(hide_password=False)
    # A PostgreSQL store needs the fleet's signing key named (no command here uses it).
    key = tmp_path / "signing.key"
    config.write_text(f'[store]\nurl = "{url}"\n[firmware]\nsigning_key = "{key}"\n')

    def cli(*arguments: str, stdin: str = "") -> tuple[int, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main([*arguments, "--config", str(config)])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    def start_sessions() -> None:
        now = datetime.now(UTC)
        for _ in range(2):
            users.start_session(
                engine,
                ann.user_id,
                secrets.token_hex(32),
                now=now,
                expires_at=now + timedelta(hours=1),
                address="127.0.0.1",
                agent="test",
                most=10,
            )

    start_sessions()
    assert cli("users", "sign-out", "ann@acme.test") == (0, "ann@acme.test: 2 sessions ended\n")
    assert session_rows(engine, ann.user_id) == []
    start_sessions()
    code, out = cli("users", "password", "ann@acme.test", "--password-stdin", stdin="short\n")
    assert code == 2 and "at least 10 characters" in out
    assert len(session_rows(engine, ann.user_id)) == 2
    code, out = cli(
        "users", "password", "ann@acme.test", "--password-stdin", stdin="another long secret\n"
    )
    assert (code, out) == (0, "ann@acme.test: password changed; 2 sessions ended\n")
    assert session_rows(engine, ann.user_id) == []
    found = users.user_for_login(engine, "ann@acme.test")
    assert found is not None and verify_password(found[1], "another long secret")
    code, out = cli("users", "sign-out", "nobody@acme.test")
    assert code == 2 and "no user nobody@acme.test" in out
