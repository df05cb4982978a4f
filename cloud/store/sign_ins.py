"""Sign-in attempts of the web view, counted in the store so that the limit holds across
replicas: per client address and per account, each in a window that starts with its first
counted attempt and lasts `web.login_failure_window` seconds.

An attempt is counted before the password is checked (`reserve`), in one transaction that
raises every counter it concerns or none: past a limit, the attempt is refused and counts
nothing. Two requests at once cannot both slip under a limit: each counter is one row,
raised by one upsert (on PostgreSQL the row is locked until the transaction ends, always
address before account, so two reservations never wait for each other in a circle; on
SQLite the write lock serialises them). A sign-in that succeeds gives its place back
(`release`); a failed one stays counted. Keys are stored as SHA-256 digests: nothing typed
into the form is kept. Rows of ended windows are swept (`sweep`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Engine, case, delete, literal, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from cloud.store.database import reading
from cloud.store.schema import UtcDateTime, sign_in_attempts

Scope = Literal["address", "account"]
# Rows of ended windows swept at a time: a sweep stays short however many there are.
SWEEP_BATCH = 1000


@dataclass(frozen=True)
class Limit:
    """At most `most` attempts for this key within a window."""

    scope: Scope
    key: str
    most: int

    @property
    def digest(self) -> str:
        return key_digest(self.scope, self.key)


@dataclass(frozen=True)
class Reservation:
    """The outcome of `reserve`: granted (and which counters it raised, for `release`),
    or refused with the seconds until the fullest window ends."""

    granted: bool
    retry_after_s: float = 0.0
    held: tuple[tuple[str, str, datetime], ...] = field(default=())


def key_digest(scope: str, key: str) -> str:
    return hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()


def reserve(engine: Engine, limits: Sequence[Limit], now: datetime, window_s: float) -> Reservation:
    """Count one attempt against every limit, or, when that would pass one of them,
    against none (refused)."""
    table = sign_in_attempts
    horizon = now - timedelta(seconds=window_s)
    dialect_insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    # A window ended, or everything in it given back: the count starts again, now.
    restart = (table.c.window_start <= horizon) | (table.c.attempts <= 0)
    held: list[tuple[str, str, datetime]] = []
    wait = 0.0
    with engine.connect() as connection, connection.begin() as transaction:
        for limit in sorted(limits, key=lambda limit: limit.scope == "account"):
            statement = (
                dialect_insert(table)
                .values(scope=limit.scope, key_digest=limit.digest, window_start=now, attempts=1)
                .on_conflict_do_update(
                    index_elements=[table.c.scope, table.c.key_digest],
                    set_={
                        "attempts": case((restart, 1), else_=table.c.attempts + 1),
                        "window_start": case(
                            (restart, literal(now, UtcDateTime())), else_=table.c.window_start
                        ),
                    },
                )
                .returning(table.c.attempts, table.c.window_start)
            )
            attempts, window_start = connection.execute(statement).one()
            if attempts > limit.most:
                ends = window_start + timedelta(seconds=window_s)
                wait = max((ends - now).total_seconds(), 1.0)
                break
            held.append((limit.scope, limit.digest, window_start))
        if wait > 0:
            transaction.rollback()
            return Reservation(False, wait)
    return Reservation(True, held=tuple(held))


def release(engine: Engine, reservation: Reservation) -> None:
    """Give back the places a granted attempt took (it succeeded): in the same windows
    only, and never below zero."""
    table = sign_in_attempts
    with engine.begin() as connection:
        for scope, digest, window_start in reservation.held:
            connection.execute(
                update(table)
                .where(
                    table.c.scope == scope,
                    table.c.key_digest == digest,
                    table.c.window_start == window_start,
                    table.c.attempts > 0,
                )
                .values(attempts=table.c.attempts - 1)
            )


def sweep(engine: Engine, now: datetime, window_s: float) -> int:
    """Delete rows whose window has ended (up to SWEEP_BATCH); how many went. On
    PostgreSQL rows a reservation holds are skipped, never waited for."""
    table = sign_in_attempts
    horizon = now - timedelta(seconds=window_s)
    ended = (
        select(table.c.scope, table.c.key_digest)
        .where(table.c.window_start <= horizon)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    )
    with engine.begin() as connection:
        return int(
            connection.execute(
                delete(table).where(tuple_(table.c.scope, table.c.key_digest).in_(ended))
            ).rowcount
        )


def attempts_counted(engine: Engine, scope: Scope, key: str, now: datetime, window_s: float) -> int:
    """Attempts counted against the key in its current window (0 when it has none)."""
    table = sign_in_attempts
    horizon = now - timedelta(seconds=window_s)
    with reading(engine) as connection:
        found = connection.execute(
            select(table.c.attempts).where(
                table.c.scope == scope,
                table.c.key_digest == key_digest(scope, key),
                table.c.window_start > horizon,
            )
        ).scalar()
    return int(found or 0)
