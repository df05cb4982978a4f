"""What a central system remembers from the commands it sends.

Three hooks, each a plain function over the database, one branch per action that
has state: `prepare_arguments` fills in what the edge allocates (reservation ids,
local list versions and entries), `apply_request` records what was asked,
`apply_answer` records what the charger said. Requests and answers use OCPP's own
camelCase keys, as they are on the wire.
"""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from edge.clock import normalize_timestamp, utc_now
from edge.smart_charging import SITE_LIMIT_PROFILE_ID_BASE


def prepare_arguments(
    db: Database, charger_id: str, action: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """Arguments (snake_case) with the edge's own allocations filled in."""
    if action == "ReserveNow" and arguments.get("reservation_id") is None:
        now = utc_now()
        cursor = db.conn.execute(
            "INSERT INTO reservations (charger_id, connector_id, id_tag, parent_id_tag, "
            "expiry_date, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                charger_id,
                arguments.get("connector_id", 0),
                arguments.get("id_tag", ""),
                arguments.get("parent_id_tag"),
                _store_time(arguments.get("expiry_date", "")),
                now,
                now,
            ),
        )
        return {**arguments, "reservation_id": cursor.lastrowid}
    if action == "SendLocalList" and "local_authorization_list" not in arguments:
        return {**arguments, **local_list_update(db, charger_id, arguments.get("update_type"))}
    return arguments


def local_list_update(db: Database, charger_id: str, update_type: str | None) -> dict[str, Any]:
    """A SendLocalList from the card table: Differential from the charger's confirmed
    version when it has one (and none was asked for explicitly), else Full."""
    current = db.conn.execute("SELECT version FROM local_list_counter").fetchone()[0]
    row = db.conn.execute(
        "SELECT version FROM local_lists WHERE charger_id = ?", (charger_id,)
    ).fetchone()
    confirmed = row[0] if row else 0
    if update_type is None:
        update_type = "Differential" if confirmed > 0 else "Full"
    since = confirmed if update_type == "Differential" else -1
    entries: list[dict[str, Any]] = []
    for id_tag, status, expiry_date, parent_id_tag, limited, allowed in db.conn.execute(
        "SELECT id_tag, status, expiry_date, parent_id_tag, "
        "EXISTS (SELECT 1 FROM id_tag_chargers c WHERE c.id_tag = t.id_tag), "
        "EXISTS (SELECT 1 FROM id_tag_chargers c WHERE c.id_tag = t.id_tag "
        "AND c.charger_id = ?) FROM id_tags t WHERE list_version > ? ORDER BY id_tag",
        (charger_id, since),
    ):
        if limited and not allowed:
            # Not for this charger: a Differential update without idTagInfo removes it.
            if update_type == "Differential":
                entries.append({"id_tag": id_tag})
            continue
        info = (("status", status), ("expiry_date", expiry_date), ("parent_id_tag", parent_id_tag))
        entries.append({"id_tag": id_tag, "id_tag_info": {k: v for k, v in info if v is not None}})
    return {
        "list_version": max(current, 1),
        "update_type": update_type,
        "local_authorization_list": entries,
    }


def apply_request(db: Database, charger_id: str, action: str, request: dict[str, Any]) -> None:
    now = utc_now()
    if action == "ChangeAvailability":
        db.conn.execute(
            "INSERT INTO availability_requests (charger_id, connector_id, requested, answer, "
            "requested_at) VALUES (?, ?, ?, 'Sent', ?) ON CONFLICT (charger_id, connector_id) "
            "DO UPDATE SET requested = excluded.requested, answer = 'Sent', "
            "requested_at = excluded.requested_at",
            (charger_id, request["connectorId"], request["type"], now),
        )
    elif action == "SetChargingProfile":
        profile = request["csChargingProfiles"]
        db.conn.execute(
            "INSERT INTO charging_profiles (charger_id, profile_id, connector_id, purpose, "
            "stack_level, transaction_id, profile, source, status, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'Sent', ?) "
            "ON CONFLICT (charger_id, profile_id) DO UPDATE SET "
            "connector_id = excluded.connector_id, "
            "purpose = excluded.purpose, stack_level = excluded.stack_level, "
            "transaction_id = excluded.transaction_id, profile = excluded.profile, "
            "status = 'Sent', updated_at = excluded.updated_at",
            (
                charger_id,
                profile["chargingProfileId"],
                request["connectorId"],
                profile["chargingProfilePurpose"],
                profile["stackLevel"],
                profile.get("transactionId"),
                json.dumps(profile),
                _profile_source(profile["chargingProfileId"]),
                now,
            ),
        )


def apply_answer(
    db: Database,
    charger_id: str,
    action: str,
    request: dict[str, Any],
    answer: dict[str, Any],
) -> None:
    now = utc_now()
    status = answer.get("status")
    connection = db.conn
    if action == "GetConfiguration":
        for entry in answer.get("configurationKey", []):
            connection.execute(
                "INSERT INTO charger_configuration (charger_id, key, value, readonly, reported_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (charger_id, key) DO UPDATE SET "
                "value = excluded.value, readonly = excluded.readonly, "
                "reported_at = excluded.reported_at, change_status = NULL",
                (charger_id, entry["key"], entry.get("value"), int(entry["readonly"]), now),
            )
    elif action == "ChangeConfiguration" and status in ("Accepted", "RebootRequired"):
        connection.execute(
            "INSERT INTO charger_configuration (charger_id, key, value, readonly, reported_at, "
            "change_status) VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (charger_id, key) DO UPDATE "
            "SET value = excluded.value, change_status = excluded.change_status",
            (charger_id, request["key"], request["value"], now, status),
        )
    elif action == "ChangeAvailability":
        connection.execute(
            "UPDATE availability_requests SET answer = ? WHERE charger_id = ? AND connector_id = ?",
            (status, charger_id, request["connectorId"]),
        )
    elif action == "ReserveNow":
        connection.execute(
            "UPDATE reservations SET status = ?, answer = ?, updated_at = ? WHERE id = ?",
            (
                "active" if status == "Accepted" else "rejected",
                status,
                now,
                request["reservationId"],
            ),
        )
    elif action == "CancelReservation" and status == "Accepted":
        connection.execute(
            "UPDATE reservations SET status = 'cancelled', updated_at = ? WHERE id = ?",
            (now, request["reservationId"]),
        )
    elif action == "SendLocalList" and status == "Accepted":
        _confirm_list_version(db, charger_id, request["listVersion"], now)
    elif action == "GetLocalListVersion":
        _confirm_list_version(db, charger_id, answer["listVersion"], now)
    elif action == "SetChargingProfile":
        profile_id = request["csChargingProfiles"]["chargingProfileId"]
        if status == "Accepted":
            connection.execute(
                "UPDATE charging_profiles SET status = 'Accepted', updated_at = ? "
                "WHERE charger_id = ? AND profile_id = ?",
                (now, charger_id, profile_id),
            )
        else:
            connection.execute(
                "DELETE FROM charging_profiles WHERE charger_id = ? AND profile_id = ?",
                (charger_id, profile_id),
            )
    elif action == "ClearChargingProfile" and status == "Accepted":
        _forget_cleared_profiles(db, charger_id, request)
    elif action == "GetInstalledCertificateIds":
        certificate_type = request["certificateType"]
        connection.execute(
            "DELETE FROM installed_certificates WHERE charger_id = ? AND certificate_type = ?",
            (charger_id, certificate_type),
        )
        for hash_data in answer.get("certificateHashData") or []:
            connection.execute(
                "INSERT INTO installed_certificates (charger_id, certificate_type, serial_number, "
                "hash_data, reported_at) VALUES (?, ?, ?, ?, ?)",
                (
                    charger_id,
                    certificate_type,
                    hash_data["serialNumber"],
                    json.dumps(hash_data),
                    now,
                ),
            )
    elif action == "DeleteCertificate" and status == "Accepted":
        connection.execute(
            "DELETE FROM installed_certificates WHERE charger_id = ? AND serial_number = ?",
            (charger_id, request["certificateHashData"]["serialNumber"]),
        )


def _profile_source(profile_id: int) -> str:
    return "site_limit" if profile_id >= SITE_LIMIT_PROFILE_ID_BASE else "operator"


def _store_time(text: str) -> str:
    try:
        return normalize_timestamp(text)
    except ValueError:
        return text  # refused by schema validation right after, and rolled back


def expire_reservations(db: Database, now: str) -> int:
    """Mark reservations past their expiry date as expired; how many were."""
    cursor = db.conn.execute(
        "UPDATE reservations SET status = 'expired', updated_at = ? "
        "WHERE status IN ('requested', 'active') AND expiry_date < ?",
        (now, now),
    )
    return int(cursor.rowcount)


def _confirm_list_version(db: Database, charger_id: str, version: int, now: str) -> None:
    db.conn.execute(
        "INSERT INTO local_lists (charger_id, version, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (charger_id) DO UPDATE SET version = excluded.version, "
        "updated_at = excluded.updated_at",
        (charger_id, version, now),
    )


def _forget_cleared_profiles(db: Database, charger_id: str, request: dict[str, Any]) -> None:
    clauses, params = ["charger_id = ?"], [charger_id]
    for key, column in (
        ("id", "profile_id"),
        ("connectorId", "connector_id"),
        ("chargingProfilePurpose", "purpose"),
        ("stackLevel", "stack_level"),
    ):
        if request.get(key) is not None:
            clauses.append(f"{column} = ?")
            params.append(request[key])
    db.conn.execute(f"DELETE FROM charging_profiles WHERE {' AND '.join(clauses)}", params)
