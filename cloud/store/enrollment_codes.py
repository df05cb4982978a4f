"""One-time enrollment codes in the store: added with their edge id and expiry, looked up
and used by the SHA-256 of the code (the store never holds a code itself)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select, update

from cloud.store.database import reading
from cloud.store.schema import enrollment_codes


@dataclass(frozen=True)
class EnrollmentCode:
    edge_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by: str | None


def add_code(
    engine: Engine, code_sha256: str, edge_id: str, created_at: datetime, expires_at: datetime
) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(enrollment_codes).values(
                code_sha256=code_sha256,
                edge_id=edge_id,
                created_at=created_at,
                expires_at=expires_at,
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
            ).where(enrollment_codes.c.code_sha256 == code_sha256)
        ).one_or_none()
    return None if row is None else EnrollmentCode(*row)


def use_code(
    engine: Engine, code_sha256: str, now: datetime, used_by: str, certificate_serial: str
) -> bool:
    """Mark the code used, if it is still unused and unexpired at `now`; whether this call
    used it. Check and mark are one statement, so two edges racing with one code cannot
    both get a certificate."""
    with engine.begin() as connection:
        result = connection.execute(
            update(enrollment_codes)
            .where(
                enrollment_codes.c.code_sha256 == code_sha256,
                enrollment_codes.c.used_at.is_(None),
                enrollment_codes.c.expires_at > now,
            )
            .values(used_at=now, used_by=used_by, certificate_serial=certificate_serial)
        )
        return result.rowcount == 1
