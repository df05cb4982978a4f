"""The people who sign in to the fleet web view: an email, an argon2 hash of their
password (cloud/web/passwords.py makes it; the store never sees a password), a role and
a fleet. Users are disabled, never deleted: the audit log keeps naming them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.store.database import StoreError, reading
from cloud.store.schema import ROLES, fleets, users
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
    sessions_revoked_at: datetime | None = None

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
        sessions_revoked_at=row.sessions_revoked_at,
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
    with engine.begin() as connection:
        connection.execute(
            update(users).where(users.c.id == user_id).values(password_hash=password_hash)
        )


def revoke_sessions(engine: Engine, user_id: int, at: datetime) -> None:
    """End every session of the user started before `at` (signing out)."""
    with engine.begin() as connection:
        connection.execute(
            update(users).where(users.c.id == user_id).values(sessions_revoked_at=at)
        )


def list_users(engine: Engine, fleet_id: int | None = None) -> list[User]:
    query = _query().order_by(users.c.fleet_id, users.c.email)
    if fleet_id is not None:
        query = query.where(users.c.fleet_id == fleet_id)
    with reading(engine) as connection:
        return [_user(row) for row in connection.execute(query).all()]


def disable_user(engine: Engine, email: str) -> User:
    """Disable the user; their sessions end at their next request."""
    email = normal_email(email)
    with engine.begin() as connection:
        changed = connection.execute(
            update(users)
            .where(users.c.email == email, users.c.disabled_at.is_(None))
            .values(disabled_at=utc_now())
        ).rowcount
    found = user_for_login(engine, email)
    if found is None:
        raise StoreError(f"no user {email}")
    if not changed:
        raise StoreError(f"{email} was disabled already")
    return found[0]
