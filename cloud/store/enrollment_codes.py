"""One-time enrollment codes in the store: added with their edge id and expiry, looked up
and used by the SHA-256 of the code (the store never holds a code itself); and whether an
edge id has a live identity that only a code made to replace it may replace."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, Engine, insert, or_, select, update

from cloud.store.database import reading
from cloud.store.schema import edges, enrollment_codes
from cloud.store.times import iso


@dataclass(frozen=True)
class EnrollmentCode:
    edge_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by: str | None
    replaces_identity: bool


def add_code(
    engine: Engine,
    code_sha256: str,
    edge_id: str,
    created_at: datetime,
    expires_at: datetime,
    replaces_identity: bool = False,
) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(enrollment_codes).values(
                code_sha256=code_sha256,
                edge_id=edge_id,
                created_at=created_at,
                expires_at=expires_at,
                replaces_identity=replaces_identity,
            )
        )


def find_code(engine: Engine, code_sha256: str) -> EnrollmentCode | None:
    with reading(engine) as connection:
        row = connection.execute(
            select(
                enrollment_codes.c.edge_id,
                enrollment_codes.c.created_at,
                enrollment_codes.c.expires_at,
                enrollment_codes.c.used_at,
                enrollment_codes.c.used_by,
                enrollment_codes.c.replaces_identity,
            ).where(enrollment_codes.c.code_sha256 == code_sha256)
        ).one_or_none()
    return None if row is None else EnrollmentCode(*row)


def live_identity(engine: Engine, edge_id: str, now: datetime) -> str | None:
    """What makes `edge_id` a live identity, in words; None when it has none."""
    with reading(engine) as connection:
        return _live_identity(connection, edge_id, now)


def _live_identity(connection: Connection, edge_id: str, now: datetime) -> str | None:
    issued = connection.execute(
        select(enrollment_codes.c.certificate_serial, enrollment_codes.c.certificate_expires_at)
        .where(
            enrollment_codes.c.edge_id == edge_id,
            enrollment_codes.c.used_at.is_not(None),
            # A code used before expiries were kept: its certificate counts as live.
            or_(
                enrollment_codes.c.certificate_expires_at.is_(None),
                enrollment_codes.c.certificate_expires_at > now,
            ),
        )
        .order_by(enrollment_codes.c.used_at.desc())
        .limit(1)
    ).one_or_none()
    if issued is not None:
        until = f", valid until {iso(issued[1])}" if issued[1] else ""
        return f"it was enrolled with certificate serial {issued[0]}{until}"
    seen = connection.execute(
        select(edges.c.first_seen_at).where(
            edges.c.id == edge_id, edges.c.first_seen_at.is_not(None)
        )
    ).one_or_none()
    if seen is not None:
        return f"it has been in touch with this cloud since {iso(seen[0])}"
    return None


UseOutcome = Literal["used", "gone", "identity"]


def use_code(
    engine: Engine,
    code_sha256: str,
    now: datetime,
    used_by: str,
    certificate_serial: str,
    certificate_expires_at: datetime,
) -> tuple[UseOutcome, str | None]:
    """Mark the code used, if it is still unused and unexpired at `now` and, unless it was
    made to replace the edge's identity, that edge has no live identity. `used`, `gone`
    (used or expired meanwhile) or `identity` (with what makes it live).

    Check and mark are one transaction: SQLite's writers take turns (BEGIN IMMEDIATE);
    on PostgreSQL the edge's code rows are locked first, so two first enrollments of one
    edge id with two codes take turns too, and the second sees the first's certificate."""
    with engine.begin() as connection:
        found = connection.execute(
            select(enrollment_codes.c.edge_id, enrollment_codes.c.replaces_identity).where(
                enrollment_codes.c.code_sha256 == code_sha256,
                enrollment_codes.c.used_at.is_(None),
                enrollment_codes.c.expires_at > now,
            )
        ).one_or_none()
        if found is None:
            return "gone", None
        edge_id, replaces_identity = found
        if not replaces_identity:
            connection.execute(
                select(enrollment_codes.c.code_sha256)
                .where(enrollment_codes.c.edge_id == edge_id)
                # One order for every taker: locks taken in different orders deadlock.
                .order_by(enrollment_codes.c.code_sha256)
                .with_for_update()
            ).all()
            live = _live_identity(connection, edge_id, now)
            if live is not None:
                return "identity", live
        result = connection.execute(
            update(enrollment_codes)
            .where(
                enrollment_codes.c.code_sha256 == code_sha256,
                enrollment_codes.c.used_at.is_(None),
                enrollment_codes.c.expires_at > now,
            )
            .values(
                used_at=now,
                used_by=used_by,
                certificate_serial=certificate_serial,
                certificate_expires_at=certificate_expires_at,
            )
        )
        return ("used", None) if result.rowcount == 1 else ("gone", None)
