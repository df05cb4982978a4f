"""The people who sign in to the fleet web view: an email, an argon2 hash of their
password (cloud/web/passwords.py makes it; the store never sees a password), a role and
a fleet. Users are disabled, never deleted: the audit log keeps naming them.

Their sessions: one row per sign-in (`web_sessions`), named by the SHA-256 of the secret
its cookie carries. A session ends when its row goes: its user signs out (that session
only), ends it from their account page, an admin ends all of the user's, the password
changes (every other session of the user), the user is disabled, the user signs in more
than `most` times (the oldest go), or it expires (swept at each sign-in)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.store.database import StoreError, reading
from cloud.store.schema import ROLES, fleets, users, web_sessions
from cloud.store.times import utc_now

Role = Literal["viewer", "operator", "admin"]
# Enough to tell an address from a typo; the mail server is the judge of the rest.
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s.]{1,63}")


@dataclass(frozen=True)
class User:
    user_id: int
    email: str
    role: Role
    fleet_id: int
    fleet_name: str
    created_at: datetime
    disabled_at: datetime | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


def normal_email(email: str) -> str:
    """The address as stored: trimmed, lower-cased; StoreError when it is none."""
    email = email.strip().lower()
    if _EMAIL.fullmatch(email) is None:
        raise StoreError(f"{email[:254]!r} is not an email address")
    return email


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise StoreError(f"a role is one of {', '.join(ROLES)}, not {role[:32]!r}")
    return role  # type: ignore[return-value]


def add_user(engine: Engine, email: str, password_hash: str, role: str, fleet_id: int) -> User:
    email, role = normal_email(email), check_role(role)
    try:
        with engine.begin() as connection:
            user_id = connection.execute(
                insert(users)
                .values(
                    email=email,
                    password_hash=password_hash,
                    role=role,
                    fleet_id=fleet_id,
                    created_at=utc_now(),
                )
                .returning(users.c.id)
            ).scalar_one()
    except IntegrityError as error:
        raise StoreError(f"there is a user {email} already, or no fleet {fleet_id}") from error
    found = user_by_id(engine, int(user_id))
    assert found is not None
    return found


def _query() -> Any:
    return select(users, fleets.c.name.label("fleet_name")).join(
        fleets, fleets.c.id == users.c.fleet_id
    )


def _user(row: Any) -> User:
    return User(
        user_id=int(row.id),
        email=row.email,
        role=row.role,
        fleet_id=int(row.fleet_id),
        fleet_name=row.fleet_name,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
    )


def user_by_id(engine: Engine, user_id: int) -> User | None:
    with reading(engine) as connection:
        row = connection.execute(_query().where(users.c.id == user_id)).first()
    return None if row is None else _user(row)


def user_for_login(engine: Engine, email: str) -> tuple[User, str] | None:
    """The user with this address and their password hash; None when there is none."""
    try:
        email = normal_email(email)
    except StoreError:
        return None
    with reading(engine) as connection:
        row = connection.execute(_query().where(users.c.email == email)).first()
    return None if row is None else (_user(row), row.password_hash)


def set_password_hash(engine: Engine, user_id: int, password_hash: str) -> None:
    """The same password's hash made again (stronger parameters): no session ends."""
    with engine.begin() as connection:
        connection.execute(
            update(users).where(users.c.id == user_id).values(password_hash=password_hash)
        )


def change_password(
    engine: Engine, user_id: int, password_hash: str, keep_digest: str | None = None
) -> int:
    """A new password: every session of the user ends but the one named (the session
    that changed it; None: all). The number of sessions ended."""
    with engine.begin() as connection:
        connection.execute(
            update(users).where(users.c.id == user_id).values(password_hash=password_hash)
        )
        return _end_sessions(connection, user_id, keep_digest)


def list_users(engine: Engine, fleet_id: int | None = None) -> list[User]:
    query = _query().order_by(users.c.fleet_id, users.c.email)
    if fleet_id is not None:
        query = query.where(users.c.fleet_id == fleet_id)
    with reading(engine) as connection:
        return [_user(row) for row in connection.execute(query).all()]


def disable_user(engine: Engine, email: str) -> User:
    """Disable the user; every session of theirs ends."""
    email = normal_email(email)
    with engine.begin() as connection:
        changed = connection.execute(
            update(users)
            .where(users.c.email == email, users.c.disabled_at.is_(None))
            .values(disabled_at=utc_now())
        ).rowcount
        user_ids = select(users.c.id).where(users.c.email == email).scalar_subquery()
        connection.execute(delete(web_sessions).where(web_sessions.c.user_id == user_ids))
    found = user_for_login(engine, email)
    if found is None:
        raise StoreError(f"no user {email}")
    if not changed:
        raise StoreError(f"{email} was disabled already")
    return found[0]


# -- sessions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WebSession:
    session_id: int
    user_id: int
    started_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    address: str
    agent: str
    secret_digest: str


def start_session(
    engine: Engine,
    user_id: int,
    secret_digest: str,
    *,
    now: datetime,
    expires_at: datetime,
    address: str,
    agent: str,
    most: int,
) -> None:
    """Store a new session of the user; past `most` sessions, their oldest end. Expired
    sessions of every user are swept on the way (a sign-in is rare enough to pay it)."""
    with engine.begin() as connection:
        # One sign-in of the user at a time (PostgreSQL; SQLite's write lock does it).
        connection.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())
        connection.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
        connection.execute(
            insert(web_sessions).values(
                secret_digest=secret_digest,
                user_id=user_id,
                started_at=now,
                last_seen_at=now,
                expires_at=expires_at,
                address=address[:64],
                agent=agent[:200],
            )
        )
        kept = (
            select(web_sessions.c.id)
            .where(web_sessions.c.user_id == user_id)
            .order_by(web_sessions.c.started_at.desc(), web_sessions.c.id.desc())
            .limit(most)
        )
        connection.execute(
            delete(web_sessions).where(
                web_sessions.c.user_id == user_id, web_sessions.c.id.not_in(kept)
            )
        )


def session_user(engine: Engine, user_id: int, secret_digest: str, now: datetime) -> User | None:
    """The user of the session named by its secret's digest, while it lasts; None once
    it has ended (or never was, or is another user's)."""
    query = _query().join(web_sessions, web_sessions.c.user_id == users.c.id)
    with reading(engine) as connection:
        row = connection.execute(
            query.where(
                web_sessions.c.secret_digest == secret_digest,
                web_sessions.c.user_id == user_id,
                web_sessions.c.expires_at > now,
            )
        ).first()
    return None if row is None else _user(row)


def touch_session(engine: Engine, secret_digest: str, now: datetime, expires_at: datetime) -> None:
    """The session was used: seen now, expiring later (never past its lifetime: the
    caller's `expires_at` is bounded by it)."""
    with engine.begin() as connection:
        connection.execute(
            update(web_sessions)
            .where(web_sessions.c.secret_digest == secret_digest, web_sessions.c.expires_at > now)
            .values(last_seen_at=now, expires_at=expires_at)
        )


def end_session(
    engine: Engine, user_id: int, *, session_id: int | None = None, secret_digest: str | None = None
) -> bool:
    """End one session of the user, named by its id or its secret's digest; False when
    the user has no such session."""
    condition = (
        web_sessions.c.id == session_id
        if session_id is not None
        else web_sessions.c.secret_digest == secret_digest
    )
    with engine.begin() as connection:
        ended = connection.execute(
            delete(web_sessions).where(web_sessions.c.user_id == user_id, condition)
        ).rowcount
    return bool(ended)


def end_sessions(engine: Engine, user_id: int, keep_digest: str | None = None) -> int:
    """End every session of the user but the one named (None: all); how many ended."""
    with engine.begin() as connection:
        return _end_sessions(connection, user_id, keep_digest)


def _end_sessions(connection: Connection, user_id: int, keep_digest: str | None) -> int:
    statement = delete(web_sessions).where(web_sessions.c.user_id == user_id)
    if keep_digest is not None:
        statement = statement.where(web_sessions.c.secret_digest != keep_digest)
    return int(connection.execute(statement).rowcount)


def list_sessions(engine: Engine, user_id: int, now: datetime) -> list[WebSession]:
    """The user's sessions that last, newest first."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(web_sessions)
            .where(web_sessions.c.user_id == user_id, web_sessions.c.expires_at > now)
            .order_by(web_sessions.c.started_at.desc(), web_sessions.c.id.desc())
        ).all()
    return [
        WebSession(
            session_id=int(row.id),
            user_id=int(row.user_id),
            started_at=row.started_at,
            last_seen_at=row.last_seen_at,
            expires_at=row.expires_at,
            address=row.address,
            agent=row.agent,
            secret_digest=row.secret_digest,
        )
        for row in rows
    ]


def session_counts(engine: Engine, fleet_id: int, now: datetime) -> dict[int, int]:
    """Sessions that last, per user of the fleet (users with none are absent)."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(web_sessions.c.user_id, func.count())
            .join(users, users.c.id == web_sessions.c.user_id)
            .where(users.c.fleet_id == fleet_id, web_sessions.c.expires_at > now)
            .group_by(web_sessions.c.user_id)
        ).all()
    return {int(user_id): int(count) for user_id, count in rows}
