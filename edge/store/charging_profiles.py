"""Charging profiles the edge set on its chargers (the operator's and the site limit's
shares), as sent and as the chargers answered."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database


def record_profile_sent(
    db: Database, charger_id: str, connector_id: int, profile: dict[str, Any], source: str, now: str
) -> None:
    """A SetChargingProfile on its way (`profile` in wire form); one id replaces another."""
    db.execute(
        "INSERT INTO charging_profiles (charger_id, profile_id, connector_id, purpose, "
        "stack_level, transaction_id, profile, source, status, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'Sent', ?) "
        "ON CONFLICT (charger_id, profile_id) DO UPDATE SET "
        "connector_id = excluded.connector_id, "
        "purpose = excluded.purpose, stack_level = excluded.stack_level, "
        "transaction_id = excluded.transaction_id, profile = excluded.profile, "
        "status = 'Sent', updated_at = excluded.updated_at",
        [
            charger_id,
            profile["chargingProfileId"],
            connector_id,
            profile["chargingProfilePurpose"],
            profile["stackLevel"],
            profile.get("transactionId"),
            json.dumps(profile),
            source,
            now,
        ],
    )


def accept_profile(db: Database, charger_id: str, profile_id: int, now: str) -> None:
    db.execute(
        "UPDATE charging_profiles SET status = 'Accepted', updated_at = ? "
        "WHERE charger_id = ? AND profile_id = ?",
        [now, charger_id, profile_id],
    )


def delete_profile(db: Database, charger_id: str, profile_id: int) -> None:
    db.execute(
        "DELETE FROM charging_profiles WHERE charger_id = ? AND profile_id = ?",
        [charger_id, profile_id],
    )


def delete_matching_profiles(
    db: Database,
    charger_id: str,
    *,
    profile_id: int | None = None,
    connector_id: int | None = None,
    purpose: str | None = None,
    stack_level: int | None = None,
) -> None:
    """What a ClearChargingProfile the charger accepted removed: every profile that
    matches all the criteria given."""
    criteria = {
        "profile_id": profile_id,
        "connector_id": connector_id,
        "purpose": purpose,
        "stack_level": stack_level,
    }
    clauses: list[str] = ["charger_id = ?"]
    params: list[str | int] = [charger_id]
    for column, value in criteria.items():
        if value is not None:
            clauses.append(f"{column} = ?")  # column names from the dict above only
            params.append(value)
    db.execute(f"DELETE FROM charging_profiles WHERE {' AND '.join(clauses)}", params)


def accepted_site_limit_profiles(
    db: Database, first_profile_id: int
) -> dict[tuple[str, int], tuple[int, float]]:
    """(charger, connector) -> (transaction, limit) of the site limit's shares in force."""
    rows = db.execute(
        "SELECT charger_id, connector_id, transaction_id, "
        "json_extract(profile, '$.chargingSchedule.chargingSchedulePeriod[0].limit') "
        "FROM charging_profiles WHERE source = 'site_limit' AND status = 'Accepted' "
        "AND profile_id >= ?",
        [first_profile_id],
    )
    return {
        (charger_id, connector_id): (transaction_id, float(limit))
        for charger_id, connector_id, transaction_id, limit in rows
    }


def list_profiles(db: Database, charger_id: str) -> list[dict[str, Any]]:
    """The charger's profiles, each with its profile as the charger was sent it."""
    profiles = list(
        db.query(
            "SELECT profile_id, connector_id, purpose, stack_level, transaction_id, source, "
            "status, profile FROM charging_profiles WHERE charger_id = ? ORDER BY profile_id",
            [charger_id],
        )
    )
    for profile in profiles:
        profile["profile"] = json.loads(profile["profile"])
    return profiles
