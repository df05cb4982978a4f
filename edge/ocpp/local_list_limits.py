"""What a charger's OCPP local list can take, as it reports it, and what the operator is
shown of each charger's list: plain functions, loaded by `ocpp-edge chargers` without
the daemon's OCPP stack.

A charger says what its list can take in four configuration keys (OCPP 1.6 §9.1);
`read_limits` turns whatever it answered into usable numbers, with a note for each value
it had to replace (docs/ocpp.md, "Local lists").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from edge.settings import LocalListSettings
from edge.store import local_lists
from edge.store.local_lists import ListState

LOCAL_AUTH_LIST_MANAGEMENT = "LocalAuthListManagement"
# A configuration value taken as a number: digits only, 1 to 999,999,999.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
LARGEST_NUMBER = 999_999_999


# -- What a charger's list can take ---------------------------------------------------


@dataclass(frozen=True)
class ListLimits:
    """A charger's local list as the edge uses it; `notes` name each value the charger
    left out or gave unusable, and what was used instead."""

    supported: bool
    enabled: bool
    max_length: int
    send_max_length: int
    notes: tuple[str, ...] = ()

    def skip_reason(self) -> str | None:
        if not self.supported:
            return f"SupportedFeatureProfiles does not name {LOCAL_AUTH_LIST_MANAGEMENT}"
        if not self.enabled:
            return "LocalAuthListEnabled is false"
        return None


def read_limits(configuration: Mapping[str, str | None], settings: LocalListSettings) -> ListLimits:
    """The limits from a charger's reported keys; missing or unusable values (negative,
    not a number, zero, beyond 999,999,999) fall back to the settings' defaults."""
    notes: list[str] = []
    cap = settings.max_entries_per_message

    def number(key: str, default: int) -> int:
        raw = configuration.get(key)
        if raw is None:
            notes.append(f"{key} not reported: {default} used")
            return default
        text = raw.strip()
        if not _WHOLE_NUMBER.fullmatch(text) or int(text) == 0:
            notes.append(
                f"{key} {_shown(raw)} is not a whole number from 1 to {LARGEST_NUMBER:,}: "
                f"{default} used"
            )
            return default
        return int(text)

    max_length = number("LocalAuthListMaxLength", settings.default_max_length)
    send_max_length = number("SendLocalListMaxLength", settings.default_send_max_length)
    if send_max_length > cap:
        notes.append(
            f"SendLocalListMaxLength {send_max_length} above "
            f"ocpp.local_list.max_entries_per_message: {cap} used"
        )
        send_max_length = cap

    enabled_text = configuration.get("LocalAuthListEnabled")
    enabled = True
    if enabled_text is None:
        notes.append("LocalAuthListEnabled not reported: taken as true")
    elif enabled_text.strip().lower() in ("true", "false"):
        enabled = enabled_text.strip().lower() == "true"
    else:
        shown = _shown(enabled_text)
        notes.append(f"LocalAuthListEnabled {shown} is not true or false: taken as true")

    profiles = configuration.get("SupportedFeatureProfiles")
    if profiles is None:
        notes.append("SupportedFeatureProfiles not reported: taken as supported")
        supported = True
    else:
        names = {name.strip().lower() for name in profiles.split(",")}
        supported = LOCAL_AUTH_LIST_MANAGEMENT.lower() in names
    return ListLimits(supported, enabled, max_length, send_max_length, tuple(notes))


def reported_send_max_length(configuration: Mapping[str, str | None]) -> int | None:
    """The entries per SendLocalList the charger said it takes, if it said so usably."""
    text = (configuration.get("SendLocalListMaxLength") or "").strip()
    if not _WHOLE_NUMBER.fullmatch(text) or int(text) == 0:
        return None
    return int(text)


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def retry_delay(failures: int, settings: LocalListSettings) -> float:
    """Seconds before the next try after `failures` refusals in a row (1, 2, ...)."""
    doubled = settings.retry_seconds * 2.0 ** min(max(failures - 1, 0), 40)
    return min(doubled, settings.retry_max_seconds)


# -- What the operator sees ---------------------------------------------------------------


def list_view(state: ListState, card_version: int, limits: ListLimits) -> dict[str, Any]:
    """A charger's local list for the local API: the version it holds of the card table
    (`behind` when older), how many of its cards (`held` of `cards`) and why not all,
    a push under way, a skip or a refusal with the next try, and the limits used."""
    return {
        "version": state.version,
        "updated_at": state.updated_at,
        "card_table_version": card_version,
        "behind": state.version < card_version and state.status != "skipped",
        "status": state.status if state.updated_at else "unknown",
        "summary": list_summary(state, card_version, limits),
        "detail": state.detail,
        "held": state.held,
        "cards": state.cards,
        "why_not_all": _why_not_all(state, limits),
        "list_version": state.list_version,
        "reported_version": state.reported_version,
        "failures": state.failures,
        "retry_at": state.retry_at,
        "limits": {
            "supported": limits.supported,
            "enabled": limits.enabled,
            "max_length": limits.max_length,
            "send_max_length": limits.send_max_length,
            "notes": list(limits.notes),
            "read_at": state.keys_read_at,
        },
    }


def list_summary(state: ListState, card_version: int, limits: ListLimits) -> str:
    """One line: `ocpp-edge chargers` shows it."""
    if state.updated_at is None:
        return "not sent yet"
    if state.status == "skipped":
        return f"skipped: {state.detail}"
    if state.status == "refused":
        return f"refused x{state.failures}: {state.detail}; next try {state.retry_at}"
    if state.status == "pushing":
        return f"pushing version {state.push_version}: {state.detail}"
    if state.held is None or state.version == 0:
        return state.detail or "holds no version of the card table"
    text = f"version {state.version}: held {state.held} of {state.cards}"
    why = _why_not_all(state, limits)
    if why:
        text += f" ({why})"
    if state.version < card_version:
        text += f"; behind the card table's {card_version}"
    return text


def local_list_summaries(db: Database, settings: LocalListSettings) -> dict[str, str]:
    """`list_summary` of every charger with a local-list row, read in one go."""
    version = local_lists.card_list_version(db)
    keys = local_lists.reported_list_keys(db)
    return {
        charger_id: list_summary(state, version, read_limits(keys.get(charger_id, {}), settings))
        for charger_id, state in local_lists.list_states(db).items()
    }


def _why_not_all(state: ListState, limits: ListLimits) -> str | None:
    if state.held is None or state.cards is None or state.held >= state.cards:
        return None
    why = f"LocalAuthListMaxLength {state.max_length}; the edge authorizes the others"
    notes = [note for note in limits.notes if note.startswith("LocalAuthListMaxLength")]
    return f"{why}; {notes[0]}" if notes else why
