"""Payloads as edges publish them, built as plain JSON so that tests can also break them."""

from __future__ import annotations

import json
from typing import Any

AT = "2026-03-01T10:00:00Z"


def event(seq: int, data: dict[str, Any], at: str = AT) -> dict[str, Any]:
    return {"seq": seq, "at": at, "data": data}


def batch(edge_id: str, events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"edge_id": edge_id, "events": events}).encode()


def card_used(id_tag: str = "CARD-1", **fields: Any) -> dict[str, Any]:
    return {
        "kind": "card.used",
        "id_tag": id_tag,
        "source": "reader",
        "action": "start",
        "status": "Accepted",
        "reason": "in the card table",
        "reader_id": "bay-1",
    } | fields


def card_use_batch(edge_id: str, seqs: range, id_tag: str = "CARD-1") -> bytes:
    """A batch of `card.used` events numbered `seqs`."""
    return batch(edge_id, [event(seq, card_used(f"{id_tag}-{seq}")) for seq in seqs])


def transaction_started(
    transaction_id: int, charger_id: str = "CP-1", **fields: Any
) -> dict[str, Any]:
    return {
        "kind": "transaction.started",
        "charger_id": charger_id,
        "connector_id": 1,
        "transaction_id": transaction_id,
        "id_tag": "CARD-1",
        "id_tag_status": "Accepted",
        "meter_start_wh": 1000,
        "started_at": "2026-03-01T10:00:00Z",
    } | fields


def transaction_meter(
    transaction_id: int, energy_wh: int, charger_id: str = "CP-1"
) -> dict[str, Any]:
    return {
        "kind": "transaction.meter",
        "charger_id": charger_id,
        "transaction_id": transaction_id,
        "meter_wh": 1000 + energy_wh,
        "energy_wh": energy_wh,
        "power_w": 7200.0,
    }


def transaction_stopped(
    transaction_id: int, energy_wh: int, charger_id: str = "CP-1"
) -> dict[str, Any]:
    return {
        "kind": "transaction.stopped",
        "charger_id": charger_id,
        "transaction_id": transaction_id,
        "meter_stop_wh": 1000 + energy_wh,
        "energy_wh": energy_wh,
        "stopped_at": "2026-03-01T11:00:00Z",
        "reason": "Local",
    }


def status(state: str = "online", **fields: Any) -> bytes:
    return json.dumps({"state": state} | fields).encode()
